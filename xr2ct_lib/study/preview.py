"""A static picture of a kit case for the book, oriented as the kit's viewer shows it.

Radiological display, as in ``template/kit.js``: axial seen from the feet (patient's right on
the image left, anterior up), coronal from the front (head up), sagittal from the patient's
left (head up, anterior on the image left). Volumes are (z inferior→superior, y
anterior→posterior, x right→left). Slice numbers count from 1 like the kit's: axial from the
top, coronal from the front, sagittal from the patient's right.
"""

from __future__ import annotations

import numpy as np

PLANES = ("axial", "coronal", "sagittal")


def kit_plane(vol: np.ndarray, plane: str, number: int | None = None) -> np.ndarray:
    """The 2D image the kit shows for slice ``number`` (1-based; default: the middle)."""
    d, h, w = vol.shape
    n = {"axial": d, "coronal": h, "sagittal": w}[plane]
    s = n // 2 if number is None else number - 1
    if not 0 <= s < n:
        raise ValueError(f"{plane} slice {number} outside 1…{n}")
    if plane == "axial":
        return vol[d - 1 - s]
    if plane == "coronal":
        return vol[::-1, s, :]
    return vol[::-1, :, s]


def case_preview(cxr: np.ndarray | None, ct: np.ndarray, title: str = ""):
    """X-ray (if given) and the three middle planes of ``ct`` in [−1, 1], in one figure row."""
    import matplotlib.pyplot as plt

    panels = ([("chest X-ray", cxr, (0, 1))] if cxr is not None else []) + [
        (plane, kit_plane(ct, plane), (-1, 1)) for plane in PLANES
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    marks = {"axial": "R L A P", "coronal": "R L S I", "sagittal": "A P S I"}
    where = ((0.04, 0.5), (0.96, 0.5), (0.5, 0.96), (0.5, 0.04))  # left, right, top, bottom
    for ax, (name, img, (lo, hi)) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
        for (x, y), t in zip(where, marks.get(name, "").split(), strict=False):
            ax.text(x, y, t, transform=ax.transAxes, color="#ffd54a", fontsize=7,
                    ha="center", va="center")  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
