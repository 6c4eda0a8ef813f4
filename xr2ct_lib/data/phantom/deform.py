"""Patient anatomy as one resampling of the source CT: a random affine and elastic
deformation, composed with the local displacements of the signs (an enlarged ventricle, an
enlarged pulmonary trunk), applied with one ``torch.nn.functional.grid_sample``.

Output voxel p (mm from the volume centre) samples the source at
``q = e + D(e)``, ``e = A p + t + elastic(p)``: ``e`` is where p lies in the deformed
normal anatomy, ``D`` the sign displacements defined on the source (zero without signs).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xr2ct_lib.data.phantom.heart import chamber_shift


def _euler(angles_rad: np.ndarray) -> np.ndarray:
    a, b, c = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def draw_anatomy(rng: np.random.Generator) -> dict:
    """Nuisance anatomy: rotation (°), scale, translation (mm), elastic amplitude (mm) and its
    5×5×5 control-point field."""
    rot = rng.uniform(-4.0, 4.0, size=3)
    scale = rng.uniform(0.94, 1.06) * rng.uniform(0.98, 1.02, size=3)
    trans = rng.uniform(-6.0, 6.0, size=3)
    elastic_mm = rng.uniform(1.0, 3.0)
    coarse = rng.standard_normal((1, 3, 5, 5, 5)).astype(np.float32) * elastic_mm
    return {"rotation_deg": rot, "scale": scale, "translation_mm": trans,
            "elastic_mm": float(elastic_mm), "coarse": coarse}  # fmt: skip


def _sample_box(field: np.ndarray, start_idx, sp: float, e_zyx: torch.Tensor) -> torch.Tensor:
    """Values of a box-local field (C, d, h, w) at points ``e_zyx`` (..., 3) mm; 0 outside."""
    dims = torch.tensor(field.shape[1:], dtype=torch.float32)
    rel = (e_zyx - torch.as_tensor(np.asarray(start_idx) * sp, dtype=torch.float32)) / (
        (dims - 1).clamp(min=1) * sp
    )
    g = (2.0 * rel - 1.0).flip(-1).reshape(1, 1, 1, -1, 3)  # grid wants (x, y, z)
    out = F.grid_sample(torch.from_numpy(field)[None], g, mode="bilinear",
                        padding_mode="zeros", align_corners=True)  # fmt: skip
    return out[0, :, 0, 0].T.reshape(*e_zyx.shape[:-1], field.shape[0])


def sign_displacement(e_zyx: torch.Tensor, base, heart: dict | None, trunk_k: float):
    """D(e) (..., 3) mm, (z, y, x): chamber enlargement and radial trunk enlargement."""
    aux, sp = base.aux, base.spacing_mm
    d = torch.zeros_like(e_zyx)
    if heart is not None:
        s = base.plane.axial_distance(e_zyx.reshape(-1, 3).double().numpy())
        shift = chamber_shift(s, tuple(aux["extent_from_septum"]), heart["enlarge"],
                              heart["septum_mm"], heart["wall_mm"])  # fmt: skip
        w = _sample_box(aux["heart_window"][None], aux["heart_start"], sp, e_zyx)[..., 0]
        u = torch.as_tensor(base.plane.axial_direction, dtype=torch.float32)
        d = d + (w * torch.from_numpy(shift).reshape(w.shape))[..., None] * u
    if trunk_k > 0:
        d = d + (trunk_k / (1.0 + trunk_k)) * _sample_box(
            aux["trunk_field"], aux["trunk_start"], sp, e_zyx
        )
    return d


def sampling_grid(base, anatomy: dict, heart: dict | None = None, trunk_k: float = 0.0):
    """The ``grid_sample`` grid (1, D, H, W, 3) that makes the patient from the source."""
    d, h, w = base.shape
    sp = base.spacing_mm
    half = np.array([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2]) * sp  # (x, y, z) mm
    a = _euler(np.deg2rad(anatomy["rotation_deg"])) @ np.diag(1.0 / anatomy["scale"])
    ax = [torch.linspace(-half[i], half[i], n) for i, n in enumerate((w, h, d))]
    z, y, x = torch.meshgrid(ax[2], ax[1], ax[0], indexing="ij")
    p = torch.stack([x, y, z], dim=-1)  # (D, H, W, 3) mm, (x, y, z)
    src = p @ torch.from_numpy(a.T.astype(np.float32)) + torch.from_numpy(
        anatomy["translation_mm"].astype(np.float32)
    )
    disp = F.interpolate(torch.from_numpy(anatomy["coarse"]), size=(d, h, w),
                         mode="trilinear", align_corners=True)[0]  # fmt: skip
    src = src + disp.permute(1, 2, 3, 0)
    if heart is not None or trunk_k > 0:
        half_t = torch.from_numpy(half.astype(np.float32))
        e_zyx = (src + half_t).flip(-1)
        src = src + sign_displacement(e_zyx, base, heart, trunk_k).flip(-1)
    return (src / torch.from_numpy(half.astype(np.float32)))[None]


def warp(grid: torch.Tensor, smooth: list[np.ndarray], nearest: list[np.ndarray]):
    """Resample volumes with ``grid``: ``smooth`` ones trilinearly, ``nearest`` ones (label
    maps) by nearest neighbour; outside the source is 0 (pass HU − air for air outside)."""
    out_s, out_n = [], []
    if smooth:
        v = torch.from_numpy(np.stack(smooth).astype(np.float32))[None]
        r = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out_s = [a.numpy() for a in r[0]]
    if nearest:
        v = torch.from_numpy(np.stack(nearest).astype(np.float32))[None]
        r = F.grid_sample(v, grid, mode="nearest", padding_mode="zeros", align_corners=True)
        out_n = [a.numpy().round().astype(np.uint8) for a in r[0]]
    return out_s, out_n
