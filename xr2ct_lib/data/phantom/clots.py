"""Clots as casts grown along the enhanced pulmonary arteries, by burden class.

A cast starts at a seed voxel of the arterial tree and takes the lumen within a geodesic
distance (scikit-image ``MCP_Geometric``, inside the arteries) of half its length on each
side, and within that the core of the lumen that gives its filling fraction: a voxel at
wall distance ``depth`` in a vessel of radius ``R`` belongs when ``depth / R ≥ 1 − √f``
(the inner disc of a circular lumen holds the fraction f of its area). Edges are blended,
the clot is 20–60 HU with texture, and the cast is lengthened until it spans the minimum
extent in z, so both halves of the preprocessed volume (even and odd slices) contain it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from xr2ct_lib.data.phantom.labels import BLOOD_HU, CODE
from xr2ct_lib.data.phantom.model import CASTS
from xr2ct_lib.data.phantom.signs import Work

# seed lumen radius (mm), cast length (mm), filling fraction, lumen radii the cast may enter
CLASS_GEOMETRY = {
    "central": {"seed_radius": (7.0, np.inf), "length": (20.0, 40.0), "fill": (0.4, 0.8),
                "grow_radius": (3.5, np.inf)},
    "lobar": {"seed_radius": (3.5, 7.0), "length": (20.0, 40.0), "fill": (0.6, 1.0),
              "grow_radius": (0.0, 7.5)},
    "segmental": {"seed_radius": (0.0, 4.5), "length": (10.0, 25.0), "fill": (0.7, 1.0),
                  "grow_radius": (0.0, 6.5)},
}  # fmt: skip
EDGE = 0.15  # width of the blended edge, in units of depth / radius
SEED_TRIES = 8


def _cast(seed, half_len, fill, allowed, depth, radius, sp):
    """(box, membership in [0, 1]) of one cast: geodesic ball × lumen core, soft edges."""
    from skimage.graph import MCP_Geometric

    reach = int(np.ceil((half_len + 10.0) / sp))
    box = tuple(
        slice(max(0, int(c) - reach), min(n, int(c) + reach + 1))
        for c, n in zip(seed, allowed.shape, strict=True)
    )
    a = allowed[box]
    cost = np.where(a, 1.0, np.inf)
    local = tuple(int(c) - s.start for c, s in zip(seed, box, strict=True))
    geo, _ = MCP_Geometric(cost, sampling=(sp,) * 3).find_costs([local])
    rel = np.where(a, depth[box] / np.maximum(radius[box], 1e-3), 0.0)
    core = np.clip((rel - (1.0 - np.sqrt(fill))) / EDGE + 0.5, 0.0, 1.0)
    along = np.clip((half_len - geo) / sp + 0.5, 0.0, 1.0)
    m = np.where(a & np.isfinite(geo), core * along, 0.0).astype(np.float32)
    m[local] = max(m[local], 1.0)
    return box, m


def _z_span(box, m, sp) -> float:
    z = np.flatnonzero((m >= 0.5).any(axis=(1, 2)))
    return float((z.max() - z.min() + 1) * sp) if len(z) else 0.0


def grow_clots(w: Work, base, rng: np.random.Generator, burden: str, min_z_mm: float) -> list:
    """Draw the casts of one burden class into ``w``; return one record per cast."""
    aux, sp = base.aux, base.spacing_mm
    geo = CLASS_GEOMETRY[burden]
    arteries = base.arteries
    depth, radius = aux["lumen_depth"], aux["lumen_radius"]
    lo, hi = geo["grow_radius"]
    allowed = arteries & (radius >= lo) & (radius < hi)
    slo, shi = geo["seed_radius"]
    # central casts start in the trunk and main pulmonary arteries, the others in branches
    part = CODE["pulmonary_trunk"] if burden == "central" else CODE["pulmonary_artery"]
    seeds = np.argwhere((base.codes == part) & (radius >= slo) & (radius < shi))
    if len(seeds) == 0:
        raise RuntimeError(f"no artery with a lumen radius in [{slo}, {shi}) mm for {burden}")
    n_lo, n_hi = CASTS[burden]
    n = int(rng.integers(n_lo, n_hi + 1))
    need = 1.1 * min_z_mm + sp
    out = []
    for _ in range(n):
        candidates = seeds[rng.integers(len(seeds), size=SEED_TRIES)]
        length0 = rng.uniform(*geo["length"])
        fill = rng.uniform(*geo["fill"])
        hu = rng.uniform(20.0, 60.0)
        tex_seed = int(rng.integers(2**31))
        # lengthen until the cast spans min_z_mm with 10 % and one voxel to spare (the
        # deformation scales and resamples it); a seed whose branch cannot reach that gives
        # way to the next candidate, else the longest
        free = allowed & (w.clots == 0)  # casts do not overlap
        best = None
        for seed in candidates:
            if not free[tuple(seed)]:
                continue
            length = length0
            for _ in range(6):
                box, m = _cast(seed, length / 2, fill, free, depth, radius, sp)
                span = _z_span(box, m, sp)
                if span >= need:
                    break
                length *= 1.3
            if best is None or span > best[0]:
                best = (span, seed, length, box, m)
            if span >= need:
                break
        if best is None:
            continue
        _, seed, length, box, m = best
        k = len(out) + 1
        tex = np.random.default_rng(tex_seed).standard_normal(m.shape).astype(np.float32)
        tex = ndi.gaussian_filter(tex, 1.0)
        clot_hu = hu + 8.0 * tex / max(float(tex.std()), 1e-6)
        # the clot takes the blood's share of each voxel: its iodine goes, its HU becomes
        # the clot's (partial-volume voxels of small arteries keep their lung share)
        p, e = w.plain[box], w.enh[box]
        blood = np.clip(e / (aux["blood_hu"] - BLOOD_HU), 0.0, 1.0)
        p += m * blood * (clot_hu - BLOOD_HU)
        e *= 1.0 - m
        w.clots[box][m >= 0.5] = k
        out.append({
            "class": burden, "seed_zyx": seed.tolist(),
            "seed_radius_mm": round(float(radius[tuple(seed)]), 2),
            "length_mm": round(float(length), 1), "fill": round(float(fill), 3),
            "hu": round(float(hu), 1),
        })  # fmt: skip
    return out
