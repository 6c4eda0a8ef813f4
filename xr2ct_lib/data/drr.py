"""Radiographs from a CT volume with DiffDRR: a clean registered DRR and a degraded CXR.

Volumes follow the library's LPS array convention: ``ct_hu`` is (z, y, x) with z inferior→
superior, y anterior→posterior, x patient right→left. DiffDRR works in RAS world
coordinates on a torchio image whose tensor is indexed (i, j, k), so the array is
transposed to (x, y, z) and given the affine diag(-s, -s, s): i runs toward patient left
(-R), j toward posterior (-A), k toward superior (+S).

The canonical pose is DiffDRR's AP frame (source 850 mm in front of the isocenter,
detector 1020 mm from the source). Images are returned upright (head at the top) in the
radiological convention (patient right on the image left), bright where the X-ray path
is attenuating (bones bright, lungs dark), as a radiograph is displayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

SDD_MM = 1020.0  # source-to-detector distance
SID_MM = 850.0  # source-to-isocenter distance
FOV_MM = 400.0  # field of view at the isocenter


@dataclass(frozen=True)
class Pose:
    """A C-arm pose: Euler angles (degrees, DiffDRR "ZXY"), translation offset (mm), SID, SDD."""

    rotations_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sid_mm: float = SID_MM
    sdd_mm: float = SDD_MM


CANONICAL_POSE = Pose()


def hu_to_mu(hu: torch.Tensor, bone_gain: float = 2.0) -> torch.Tensor:
    """Linear attenuation relative to water: 1 + HU/1000, plus ``bone_gain - 1`` times the
    part above 200 HU (bone and iodine attenuate relatively more at radiographic energies
    than at the CT's), clamped at 0.

    Used instead of DiffDRR's default density, which maps everything below -800 HU to one
    value and so would erase lung-density changes (oligemia) from the radiograph.
    """
    hu = hu.float()
    return torch.clamp(1.0 + hu / 1000.0 + (bone_gain - 1.0) * torch.relu(hu - 200.0) / 1000.0, 0.0)


def _volume_tensor(ct_hu: np.ndarray, spacing_mm: float, render_spacing_mm: float | None):
    """(tensor (1, x, y, z), spacing): the volume as DiffDRR reads it, area-downsampled to
    about ``render_spacing_mm`` when that is coarser."""
    vol = torch.from_numpy(np.array(ct_hu, dtype=np.float32))
    sp = float(spacing_mm)
    if render_spacing_mm is not None and render_spacing_mm > spacing_mm * 1.05:
        factor = spacing_mm / render_spacing_mm
        out = [max(2, int(round(n * factor))) for n in vol.shape]
        vol = F.interpolate(vol[None, None], size=out, mode="area")[0, 0]
        sp = float(np.mean([spacing_mm * n / m for n, m in zip(ct_hu.shape, out, strict=True)]))
    return vol.permute(2, 1, 0).contiguous()[None], sp


def make_subject(
    ct_hu: np.ndarray,
    spacing_mm: float,
    render_spacing_mm: float | None = None,
    center_zyx: tuple[float, float, float] | None = None,
):
    """A DiffDRR subject (``diffdrr.data.read``) of an LPS (z, y, x) HU volume.

    ``render_spacing_mm`` (coarser than ``spacing_mm``) downsamples the volume first (area
    averaging), which makes ray casting cheap. ``center_zyx`` (voxel index, default the
    volume centre) is placed at the isocenter.
    """
    if center_zyx is None:
        center_zyx = tuple((n - 1) / 2 for n in ct_hu.shape)
    c_mm = np.asarray(center_zyx, dtype=float) * spacing_mm
    from diffdrr.data import read
    from torchio import ScalarImage

    tensor, sp = _volume_tensor(ct_hu, spacing_mm, render_spacing_mm)
    affine = np.diag([-sp, -sp, sp, 1.0])
    affine[:3, 3] = [c_mm[2], c_mm[1], -c_mm[0]]  # RAS world origin at the chosen centre
    subject = read(ScalarImage(tensor=tensor, affine=affine), orientation="AP", center_volume=False)
    subject.density.set_data(hu_to_mu(subject.volume.data))
    return subject


def render(subject, size: int, pose: Pose = CANONICAL_POSE, fov_mm: float = FOV_MM) -> np.ndarray:
    """Line integral of mu/mu_water (mm of water equivalent) on a ``size``×``size`` detector.

    DiffDRR's trilinear renderer with about 1.2 samples per voxel along the longest volume
    axis (within 0.6 % of its exact Siddon renderer at a third of the cost).
    """
    from diffdrr.drr import DRR

    delx = fov_mm * pose.sdd_mm / pose.sid_mm / size
    drr = DRR(subject, sdd=pose.sdd_mm, height=size, delx=delx, renderer="trilinear")
    n_points = int(np.ceil(1.2 * max(subject.density.shape[1:])))
    rot = torch.tensor([pose.rotations_deg], dtype=torch.float32)
    trans = torch.tensor([pose.offset_mm], dtype=torch.float32)
    trans[0, 1] += pose.sid_mm
    with torch.no_grad():
        img = drr(
            rot, trans, parameterization="euler_angles", convention="ZXY", degrees=True,
            n_points=n_points,
        )  # fmt: skip
    return img[0, 0].numpy().astype(np.float32)


def normalize01(img: np.ndarray, lo_pct: float = 0.0, hi_pct: float = 100.0) -> np.ndarray:
    """Scale to [0, 1] between two percentiles (clipped)."""
    lo, hi = np.percentile(img, [lo_pct, hi_pct])
    out = (img - lo) / max(float(hi - lo), 1e-6)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def random_pose(rng: np.random.Generator) -> Pose:
    """A pose a few degrees / centimetres / percent of magnification off the canonical one."""
    rot = rng.uniform(-4.0, 4.0, size=3)
    off = rng.uniform(-15.0, 15.0, size=3) * np.array([1.0, 0.0, 1.0])
    off[1] = rng.uniform(-60.0, 60.0)  # source distance → magnification
    sdd = SDD_MM * rng.uniform(0.95, 1.08)
    return Pose(tuple(map(float, rot)), tuple(map(float, off)), SID_MM, float(sdd))


def degrade(line_integral: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Turn a line-integral image into a radiograph-like image in [0, 1].

    Beer-Lambert transmission, scatter (a broad blurred copy of the primary), focal-spot/
    detector blur, Poisson quantum noise, log conversion, a sigmoid detector response,
    electronic Gaussian noise and collimation borders (unexposed, so white).
    """
    size = line_integral.shape[0]
    p = {
        "mu_mm": float(rng.uniform(0.010, 0.016)),
        "scatter_fraction": float(rng.uniform(0.15, 0.5)),
        "scatter_sigma_px": float(rng.uniform(0.08, 0.15) * size),
        "blur_sigma_px": float(rng.uniform(0.4, 1.0) * size / 128),
        "photons": float(rng.uniform(1.5e3, 1e4)),
        "gain": float(rng.uniform(4.0, 8.0)),
        "gamma": float(rng.uniform(0.8, 1.25)),
        "read_noise": float(rng.uniform(0.004, 0.015)),
        "collimation": [float(v) for v in rng.uniform(0.0, 0.08, size=4)],
    }
    primary = np.exp(-p["mu_mm"] * line_integral.astype(np.float64))
    scatter = ndi.gaussian_filter(primary, p["scatter_sigma_px"], mode="nearest")
    intensity = primary + p["scatter_fraction"] * scatter
    intensity = ndi.gaussian_filter(intensity, p["blur_sigma_px"], mode="nearest")
    counts = rng.poisson(p["photons"] * intensity)
    attenuation = -np.log(np.maximum(counts, 0.5) / p["photons"])
    x = normalize01(attenuation, 0.5, 99.5).astype(np.float64)
    x = 1.0 / (1.0 + np.exp(-p["gain"] * (x - 0.5)))
    lo, hi = 1.0 / (1.0 + np.exp(p["gain"] / 2)), 1.0 / (1.0 + np.exp(-p["gain"] / 2))
    x = ((x - lo) / (hi - lo)) ** p["gamma"]
    x = x + rng.normal(0.0, p["read_noise"], size=x.shape)
    t, b, left, r = (int(round(c * size)) for c in p["collimation"])
    x[:t] = 1.0
    x[size - b :] = 1.0
    x[:, :left] = 1.0
    x[:, size - r :] = 1.0
    return np.clip(x, 0.0, 1.0).astype(np.float32), p


def render_pair(
    ct_hu: np.ndarray,
    spacing_mm: float,
    size: int,
    rng: np.random.Generator,
    center_zyx: tuple[float, float, float] | None = None,
    fov_mm: float = FOV_MM,
    cxr_hu: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(drr, cxr, info): the clean canonical DRR of ``ct_hu`` and a degraded CXR at a
    perturbed pose, rendered from ``cxr_hu`` when given (the same body without iodine: a
    radiograph has no contrast), else from ``ct_hu``.

    ``center_zyx`` (voxel index) is the isocenter, ``fov_mm`` the field of view there. The
    volume is rendered from a copy no finer than about 0.8 of the detector pixel at the
    isocenter, so the cost does not grow with the CT resolution.
    """
    pixel_iso = fov_mm / size
    render_sp = max(spacing_mm, 0.8 * pixel_iso)
    subject = make_subject(ct_hu, spacing_mm, render_sp, center_zyx)
    drr = normalize01(render(subject, size, CANONICAL_POSE, fov_mm))
    if cxr_hu is not None:  # same grid: swap the density only
        if cxr_hu.shape != ct_hu.shape:
            raise ValueError(f"cxr_hu has shape {cxr_hu.shape}, ct_hu {ct_hu.shape}")
        subject.density.set_data(hu_to_mu(_volume_tensor(cxr_hu, spacing_mm, render_sp)[0]))
    pose = random_pose(rng)
    cxr, params = degrade(render(subject, size, pose, fov_mm), rng)
    info = {
        "pose_rotations_deg": list(pose.rotations_deg),
        "pose_offset_mm": list(pose.offset_mm),
        "pose_sdd_mm": pose.sdd_mm,
        **params,
    }
    return drr, cxr, info
