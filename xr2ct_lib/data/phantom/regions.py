"""Per-base helpers computed once, so that each simulated patient is cheap.

Everything here depends only on the source CT at one spacing: lumen geometry of the
pulmonary arteries, the displacement windows of the heart and the pulmonary trunk, the
order in which pleural fluid fills each lung base, pleural surfaces, lobes, view geometry.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from xr2ct_lib.data.phantom.heart import SeptalPlane, ventricle_widths
from xr2ct_lib.data.phantom.labels import CODE, IVC, LEFT_LOBES, LUNG_LOBES
from xr2ct_lib.data.phantom.vessels import lumen_geometry, trunk_diameter_mm

LOWER_LOBES = {"left": 11, "right": 14}
CROP_MARGIN_MM = 6.0  # the preprocessing's lung-crop margin


def _bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    return tuple(
        slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + 1 + margin))
        for i, n in zip(idx, mask.shape, strict=True)
    )


def _box_start(box) -> np.ndarray:
    return np.array([s.start for s in box], dtype=np.int64)


def heart_window(codes: np.ndarray, sp: float) -> tuple[np.ndarray, np.ndarray]:
    """(box start, window): ≈ 1 over the chambers and 15 mm around them, → 0 beyond
    (Gaussian edge, σ 6 mm), where chamber enlargement moves tissue."""
    chambers = np.isin(codes, [CODE[k] for k in ("right_ventricle", "left_ventricle",
                                                  "right_atrium", "left_atrium")])  # fmt: skip
    reach = int(np.ceil(35.0 / sp))
    box = _bbox(chambers, reach)
    grown = ndi.binary_dilation(chambers[box], iterations=max(1, round(15.0 / sp)))
    w = ndi.gaussian_filter(grown.astype(np.float32), 6.0 / sp)
    return _box_start(box), np.clip(2.0 * w, 0.0, 1.0).astype(np.float32)


def trunk_field(codes: np.ndarray, radius: np.ndarray, sp: float):
    """(box start, field (3, d, h, w) mm): windowed vector from each point to the nearest
    centreline voxel of the pulmonary trunk; scaled by k/(1+k) it enlarges the trunk and
    main pulmonary arteries radially by the factor 1+k (window 1 up to 8 mm outside the
    wall, → 0 at 30 mm)."""
    from skimage.morphology import skeletonize

    trunk = codes == CODE["pulmonary_trunk"]
    box = _bbox(trunk, int(np.ceil(30.0 / sp)))
    t = trunk[box]
    skel = skeletonize(t).astype(bool)
    dist, idx = ndi.distance_transform_edt(~skel, sampling=sp, return_indices=True)
    grid = np.indices(t.shape)
    to_axis = (idx - grid).astype(np.float32) * sp  # (3, d, h, w), (z, y, x) mm
    r_axis = radius[box][tuple(idx)]
    w = np.clip(1.0 - (dist - r_axis - 8.0) / 22.0, 0.0, 1.0).astype(np.float32)
    return _box_start(box), to_axis * w[None]


def effusion_order(labels: np.ndarray, arteries: np.ndarray, sp: float) -> dict:
    """Flat indices of each lower lobe in the order pleural fluid fills it: by potential
    depth from the posterior lung surface + ½ height above the lobe's lowest voxel (supine,
    dependent, basal)."""
    out = {}
    for side, lobe in LOWER_LOBES.items():
        z, y, x = np.nonzero((labels == lobe) & ~arteries)
        ymax = np.full((labels.shape[0], labels.shape[2]), -1)
        np.maximum.at(ymax, (z, x), y)
        potential = (ymax[z, x] - y) * sp + 0.5 * (z - z.min()) * sp
        order = np.argsort(potential, kind="stable")
        out[side] = np.ravel_multi_index((z[order], y[order], x[order]), labels.shape)
    return out


def compute_helpers(arrays: dict) -> dict:
    """The per-base helper arrays (cached with the base)."""
    codes, labels = arrays["codes"], arrays["labels"]
    sp = float(arrays["spacing_mm"])
    plane = SeptalPlane(tuple(arrays["plane_normal"]), float(arrays["plane_offset"]))
    arteries = np.isin(codes, [CODE["pulmonary_trunk"], CODE["pulmonary_artery"]])
    depth, radius = lumen_geometry(arteries, sp)
    h = {"lumen_depth": depth, "lumen_radius": radius}
    h["heart_start"], h["heart_window"] = heart_window(codes, sp)
    h["trunk_start"], h["trunk_field"] = trunk_field(codes, radius, sp)
    for side, order in effusion_order(labels, arteries, sp).items():
        h[f"effusion_{side}"] = order.astype(np.int64)
    # ventricle extents from the septal plane, for the chamber shift
    s = {}
    for name in ("right_ventricle", "left_ventricle"):
        pts = np.argwhere(codes == CODE[name]) * sp
        s[name] = plane.axial_distance(pts)
    h["extent_from_septum"] = np.array(
        [np.percentile(s["right_ventricle"], 95), np.percentile(-s["left_ventricle"], 95)]
    )
    h["ventricle_diameters"] = np.array(ventricle_widths(codes, sp, plane))
    h["trunk_diameter"] = np.float64(trunk_diameter_mm(codes == CODE["pulmonary_trunk"], sp))
    lung = np.isin(labels, list(LUNG_LOBES))
    lz, ly, lx = np.nonzero(lung)
    h["lung_extent_mm"] = np.array(
        [(np.ptp(a) + 1) * sp + 2 * CROP_MARGIN_MM for a in (lz, ly, lx)]
    )
    h["view_center_zyx"] = np.array([(a.min() + a.max()) / 2 for a in (lz, ly, lx)])
    h["view_fov_mm"] = np.float64(1.15 * sp * max(np.ptp(lz), np.ptp(lx)))
    return h


def load_time_helpers(labels: np.ndarray, codes: np.ndarray, sp: float) -> dict:
    """Cheap helpers recomputed on load: lobe voxels, pleural surfaces, hila, IVC."""
    arteries = np.isin(codes, [CODE["pulmonary_trunk"], CODE["pulmonary_artery"]])
    zz, yy, xx = np.nonzero(arteries)
    if len(xx) == 0:
        raise ValueError("example CT: the pulmonary-artery mask is empty")
    mid = labels.shape[2] / 2  # patient right = low x (LPS)
    hilum = {
        "right": np.array([zz[xx < mid].mean(), yy[xx < mid].mean(), xx[xx < mid].mean()]),
        "left": np.array([zz[xx >= mid].mean(), yy[xx >= mid].mean(), xx[xx >= mid].mean()]),
    }
    lung = np.isin(labels, list(LUNG_LOBES))
    pleura = lung & ~ndi.binary_erosion(lung)
    lobe_idx, pleural = {}, {}
    for lobe in LUNG_LOBES:
        lobe_idx[lobe] = np.flatnonzero((labels == lobe) & ~arteries)
        side = "left" if lobe in LEFT_LOBES else "right"
        pts = np.argwhere(pleura & (labels == lobe))
        dist = np.linalg.norm(pts - hilum[side], axis=1)
        pleural[lobe] = pts[dist >= np.median(dist)]  # peripheral pleural surface
    ivc = np.argwhere(labels == IVC)
    ivc = ivc[np.argsort(-ivc[:, 0], kind="stable")]  # from the heart down
    return {"hilum": hilum, "lobe_idx": lobe_idx, "pleural": pleural, "ivc": ivc}
