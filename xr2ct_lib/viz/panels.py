"""Figure panels of the chapters: grids of X-rays, CT slices, latents and maps, one call each.

Each function returns the matplotlib figure; the notebook saves it with
:func:`xr2ct_lib.viz.provenance.save_figure`. Volumes are (D, H, W) in [−1, 1], drawn with
:func:`xr2ct_lib.viz.volumes.plane_slice` (axial anterior-up, coronal and sagittal head-up).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from xr2ct_lib.viz.volumes import PLANES, mask_outline, plane_slice

CT = {"cmap": "gray", "vmin": -1, "vmax": 1}


def encoder_inputs(images: dict[str, dict[str, np.ndarray]], titles: dict[str, str], size: int):
    """Rows X-ray and DRR, one column per patient; ``images[pid]`` holds (3, S, S) cxr, drr."""
    pids = list(images)
    fig, axes = plt.subplots(2, len(pids), figsize=(2 * len(pids), 4.3), squeeze=False)
    for k, pid in enumerate(pids):
        for r, key in enumerate(("cxr", "drr")):
            axes[r, k].imshow(images[pid][key].transpose(1, 2, 0))
            axes[r, k].set_xticks([])
            axes[r, k].set_yticks([])
        axes[0, k].set_title(titles[pid], fontsize=8)
    axes[0, 0].set_ylabel("X-ray")
    axes[1, 0].set_ylabel("DRR")
    fig.suptitle(f"Encoder inputs ({size}×{size}×3)")
    fig.tight_layout()
    return fig


def consecutive_slices(truth: np.ndarray, other: np.ndarray, name: str, title: str, n: int = 4):
    """Fig. 6 layout: ``n`` consecutive middle slices of each plane, ``truth`` above ``other``."""
    fig, axes = plt.subplots(6, n, figsize=(7.5, 11))
    for r, plane in enumerate(PLANES):
        mid = truth.shape[PLANES.index(plane)] // 2
        for c, k in enumerate(range(mid - n // 2, mid + n - n // 2)):
            for rr, (v, label) in enumerate([(truth, "ground truth"), (other, name)]):
                ax = axes[2 * r + rr, c]
                ax.imshow(plane_slice(v, plane, k), **CT)
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(f"{plane}\n{label}", fontsize=8)
                if rr == 0:
                    ax.set_title(f"slice {k}", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def latent_channels(ct: np.ndarray, z: np.ndarray):
    """The middle axial CT slice beside the middle slice of each latent channel (C, D, h, w)."""
    fig, axes = plt.subplots(1, z.shape[0] + 1, figsize=(2.2 * (z.shape[0] + 1), 2.4))
    axes[0].imshow(ct[ct.shape[0] // 2], **CT)
    axes[0].set_title("CT slice", fontsize=8)
    for c in range(z.shape[0]):
        axes[c + 1].imshow(z[c, z.shape[1] // 2], cmap="magma")
        axes[c + 1].set_title(f"latent channel {c}", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def _clot_centre(clot: np.ndarray, fallback: tuple[int, int]) -> tuple[int, int]:
    """Axial and coronal index with the most clot voxels (``fallback`` without a clot)."""
    if not clot.any():
        return fallback
    return int(np.argmax(clot.sum(axis=(1, 2)))), int(np.argmax(clot.sum(axis=(0, 2))))


def key_slices(
    pids: list[str],
    generated: dict[str, np.ndarray],
    truth: dict[str, dict[str, np.ndarray]],
    clots: bool = False,
    title: str | None = None,
):
    """Figs. 2, 3 and 9 layout, one row per patient of ``pids``: X-ray | GT axial | generated
    axial | GT coronal | generated coronal, through the clot's centre when the patient has one.

    ``truth[pid]`` holds the prepared ``cxr``, ``ct`` and ``clot``; ``generated[pid]`` the
    generated (D, H, W) volume. ``clots`` outlines the true clot on the CT panels.
    """
    fig, axes = plt.subplots(len(pids), 5, figsize=(11, 2.3 * len(pids)), squeeze=False)
    for r, pid in enumerate(pids):
        g, gt = generated[pid], truth[pid]
        z, y = _clot_centre(gt["clot"], (g.shape[0] // 2, g.shape[1] // 2))
        panels = [
            (gt["cxr"][0], "X-ray", None, None),
            (gt["ct"], "GT axial", "axial", z),
            (g, "generated axial", "axial", z),
            (gt["ct"], "GT coronal", "coronal", y),
            (g, "generated coronal", "coronal", y),
        ]
        for c, (img, label, plane, idx) in enumerate(panels):
            ax = axes[r, c]
            if plane is None:
                ax.imshow(img, cmap="gray")
            else:
                ax.imshow(plane_slice(img, plane, idx), **CT)
                if clots:
                    mask_outline(ax, plane_slice(gt["clot"], plane, idx))
            ax.set_axis_off()
            ax.set_title(f"{pid} {label}" if c == 0 else label, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def cam_overlays(
    cts: dict[str, np.ndarray],
    cams: dict[str, np.ndarray],
    clots: dict[str, np.ndarray],
    title: str = "",
    with_plain: bool = True,
    label: str = "",
):
    """Fig. 8 layout: per patient, the axial slice with the most clot, the Grad-CAM overlaid
    (below the plain CT when ``with_plain``), the true clot outlined in green; ``label``
    follows each patient's id in the panel titles."""
    pids = list(cams)
    rows = 2 if with_plain else 1
    fig, axes = plt.subplots(rows, len(pids), figsize=(3 * len(pids), 6.2 if with_plain else 3.2),
                             squeeze=False)  # fmt: skip
    for k, pid in enumerate(pids):
        zs = int(np.argmax(clots[pid].sum(axis=(1, 2))))
        for r, overlay in enumerate((False, True)[-rows:]):
            ax = axes[r, k]
            ax.imshow(cts[pid][zs], **CT)
            if overlay:
                ax.imshow(cams[pid][zs], cmap="jet", alpha=0.4, vmin=0, vmax=1)
            mask_outline(ax, clots[pid][zs], color="lime")
            ax.set_axis_off()
        axes[0, k].set_title(f"{pid}{label}, slice {zs}", fontsize=8)
    axes[0, 0].set_ylabel("CT")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
