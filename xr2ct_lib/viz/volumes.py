"""Slices of (D, H, W) volumes in LPS order, displayed the way radiologists read them."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

PLANES = ("axial", "coronal", "sagittal")


def plane_slice(vol: np.ndarray, plane: str, index: int | None = None) -> np.ndarray:
    """A 2D slice in the radiological display convention.

    Axial: anterior up, the patient's right on the image left (seen from the feet); coronal:
    head up, the patient's right on the image left (facing the patient); sagittal: head up,
    anterior on the image left. The array axes are (z inferior→superior, y
    anterior→posterior, x right→left); ``index`` defaults to the middle of the plane's axis.
    """
    d, h, w = vol.shape
    if plane == "axial":
        return vol[d // 2 if index is None else index]
    if plane == "coronal":
        return vol[:, h // 2 if index is None else index, :][::-1]
    if plane == "sagittal":
        return vol[:, :, w // 2 if index is None else index][::-1]
    raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")


def show_planes(axes, vol: np.ndarray, title: str = "", center=None, **imshow_kwargs) -> None:
    """Axial, coronal and sagittal slices through ``center`` (default: the middle) on three axes."""
    center = center or tuple(s // 2 for s in vol.shape)
    kw = {"cmap": "gray"} | imshow_kwargs
    for ax, plane, idx in zip(axes, PLANES, (center[0], center[1], center[2]), strict=True):
        ax.imshow(plane_slice(vol, plane, idx), **kw)
        ax.set_axis_off()
        ax.set_title(f"{title} {plane}".strip(), fontsize=9)


def mask_outline(ax, mask2d: np.ndarray, color: str = "red", linewidth: float = 0.8) -> None:
    """Contour of a binary mask on an axis (nothing when the mask is empty)."""
    if mask2d.any():
        ax.contour(mask2d.astype(float), levels=[0.5], colors=color, linewidths=linewidth)


def slice_grid(
    volumes: list[np.ndarray], titles: list[str], plane="axial", n=5, figsize_per=1.6, **kw
):
    """Rows of ``n`` evenly spaced slices, one row per volume (Fig. 2 / Fig. 6 style)."""
    fig, axes = plt.subplots(len(volumes), n, figsize=(n * figsize_per, len(volumes) * figsize_per))
    axes = np.atleast_2d(axes)
    for r, (vol, title) in enumerate(zip(volumes, titles, strict=True)):
        axis = {"axial": 0, "coronal": 1, "sagittal": 2}[plane]
        idxs = np.linspace(0.2, 0.8, n) * (vol.shape[axis] - 1)
        for c, i in enumerate(idxs.astype(int)):
            ax = axes[r, c]
            ax.imshow(plane_slice(vol, plane, i), cmap="gray", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title, fontsize=8)
    return fig, axes
