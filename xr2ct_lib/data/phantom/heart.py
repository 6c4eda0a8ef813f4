"""Cardiac chambers of the source CT, the RV/LV diameter ratio, and chamber enlargement.

TotalSegmentator v1 gives one ``heart`` label without chambers. :func:`cardiac_chambers`
splits it (documented there); :func:`rv_lv_ratio` measures the axial RV/LV diameter ratio
of a findings map; :func:`chamber_shift` is the displacement that enlarges one ventricle
against the other, moving the septum and that ventricle's free wall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from xr2ct_lib.data.phantom.labels import CODE, HEART, IVC, PULMONARY_VEIN
from xr2ct_lib.data.phantom.vessels import outflow_level

ATRIAL_FRACTION = 0.35  # basal share of the base→apex length taken by the atria


@dataclass(frozen=True)
class SeptalPlane:
    """The plane ``normal · p + offset = 0`` (p in mm, (z, y, x) from voxel [0, 0, 0]);
    ``normal`` is a unit vector pointing to the right heart."""

    normal: tuple[float, float, float]
    offset: float

    @property
    def axial_direction(self) -> np.ndarray:
        """Unit in-plane (axial) direction of the normal, (z, y, x) with z = 0."""
        n = np.array([0.0, self.normal[1], self.normal[2]])
        return n / np.linalg.norm(n)

    def axial_distance(self, points_mm: np.ndarray) -> np.ndarray:
        """Signed distance to the plane along :attr:`axial_direction` (positive = right)."""
        n = np.asarray(self.normal)
        return (points_mm @ n + self.offset) / np.linalg.norm(n[1:])


def cardiac_chambers(
    ct_hu: np.ndarray, labels: np.ndarray, trunk: np.ndarray, spacing_mm: float
) -> tuple[np.ndarray, SeptalPlane]:
    """(codes, septal plane): RV, LV, RA and LA codes (:data:`labels.FINDINGS`) in ``heart``.

    - Right vs left. In this CT the right heart holds swirling, mixed contrast (the bolus
      from the superior vena cava meets unopacified blood from the inferior one) and the
      left heart a homogeneous enhancement. On the blood pool away from the walls (heart
      eroded 6 mm, > 150 HU), a local HU standard deviation (10 mm window) ≥ 100 HU marks
      right, ≤ 50 HU left; a logistic regression on position (scikit-learn) separates them
      with a plane, the septal plane (atrial and ventricular septa together).
    - Atria vs ventricles. The long axis runs from the base (centroid of the heart voxels
      that touch the pulmonary veins and the venae cavae) to the apex (the chamber voxel
      farthest from it); the basal 35 % of its length is atrial, the rest ventricular.
    - The outflow part of ``heart`` that is not pulmonary trunk is left-atrial roof.
    """
    from sklearn.linear_model import LogisticRegression

    sp = float(spacing_mm)
    _, z_top = outflow_level(labels)
    zz = np.arange(labels.shape[0])[:, None, None]
    heart = (labels == HEART) & ~trunk
    chambers = heart & (zz < z_top)
    ct = ct_hu.astype(np.float64)
    k = max(3, int(round(10.0 / sp)) | 1)
    mean = ndi.uniform_filter(ct, k)
    sd = np.sqrt(np.maximum(ndi.uniform_filter(ct * ct, k) - mean * mean, 0.0))
    inner = ndi.binary_erosion(heart, iterations=max(1, round(6.0 / sp))) & chambers & (ct > 150)
    right, left = inner & (sd >= 100.0), inner & (sd <= 50.0)
    if right.sum() < 20 or left.sum() < 20:
        raise ValueError("example CT: cannot tell the right from the left heart by contrast")
    pts = np.concatenate([np.argwhere(right), np.argwhere(left)]) * sp
    y = np.r_[np.ones(int(right.sum())), np.zeros(int(left.sum()))]
    centre = pts.mean(axis=0)
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(pts - centre, y)
    w = clf.coef_[0]
    norm = float(np.linalg.norm(w))
    plane = SeptalPlane(
        normal=tuple(float(v) for v in w / norm),
        offset=float((clf.intercept_[0] - w @ centre) / norm),
    )

    p = np.argwhere(chambers) * sp
    inflow = chambers & ndi.binary_dilation(
        np.isin(labels, [PULMONARY_VEIN, 62, IVC]), iterations=max(1, round(4.0 / sp))
    )
    base_pt = np.argwhere(inflow).mean(axis=0) * sp if inflow.any() else p.mean(axis=0)
    apex = p[np.argmax(np.linalg.norm(p - base_pt, axis=1))]
    axis = (apex - base_pt) / np.linalg.norm(apex - base_pt)
    t = (p - base_pt) @ axis
    ventricle = t >= ATRIAL_FRACTION * t.max()
    is_right = (p @ np.asarray(plane.normal) + plane.offset) > 0
    codes = np.zeros(labels.shape, np.uint8)
    idx = tuple(np.argwhere(chambers).T)
    codes[idx] = np.select(
        [ventricle & is_right, ventricle & ~is_right, is_right],
        [CODE["right_ventricle"], CODE["left_ventricle"], CODE["right_atrium"]],
        CODE["left_atrium"],
    )
    codes[heart & (zz >= z_top)] = CODE["left_atrium"]
    return codes, plane


def ventricle_widths(codes: np.ndarray, spacing_mm, plane: SeptalPlane) -> tuple[float, float]:
    """(RV, LV) diameters in mm: per axial slice, each ventricle's extent along the septal
    normal's axial direction; the largest over slices (the axial RV/LV measurement)."""
    sp = np.broadcast_to(np.asarray(spacing_mm, float), (3,))
    d = plane.axial_direction
    out = []
    for code in (CODE["right_ventricle"], CODE["left_ventricle"]):
        pts = np.argwhere(codes == code)
        if len(pts) == 0:
            out.append(float("nan"))
            continue
        proj = (pts * sp) @ d
        z = pts[:, 0]
        order = np.argsort(z, kind="stable")
        z, proj = z[order], proj[order]
        starts = np.flatnonzero(np.r_[True, z[1:] != z[:-1]])
        ext = np.maximum.reduceat(proj, starts) - np.minimum.reduceat(proj, starts)
        out.append(float(ext.max() + sp[1]))
    return out[0], out[1]


def rv_lv_ratio(codes: np.ndarray, spacing_mm, plane: SeptalPlane) -> float:
    """RV/LV diameter ratio of a findings map (see :func:`ventricle_widths`)."""
    rv, lv = ventricle_widths(codes, spacing_mm, plane)
    return rv / lv


def chamber_shift(
    s_mm: np.ndarray, widths: tuple[float, float], enlarge: str, septum_mm: float, wall_mm: float
) -> np.ndarray:
    """Source-minus-output shift along the septal normal that enlarges one ventricle.

    ``s_mm``: output points' axial distance to the septal plane (positive = right);
    ``widths``: (RV, LV) extents from the plane. ``enlarge="rv"`` moves the septum
    ``septum_mm`` into the LV and the RV free wall ``wall_mm`` outward (LV compressed,
    RV stretched); ``"lv"`` the mirror image. Piecewise linear and monotonic, so no folding.
    """
    w_rv, w_lv = widths
    far = 1e4
    if enlarge == "rv":
        xp = [-far, -w_lv, -septum_mm, w_rv + wall_mm, far]
        fp = [-far, -w_lv, 0.0, w_rv, far - wall_mm]
    elif enlarge == "lv":
        xp = [-far, -w_lv - wall_mm, septum_mm, w_rv, far]
        fp = [-far + wall_mm, -w_lv, 0.0, w_rv, far]
    else:
        raise ValueError(f"enlarge must be 'rv' or 'lv', got {enlarge!r}")
    return (np.interp(s_mm, xp, fp) - s_mm).astype(np.float32)
