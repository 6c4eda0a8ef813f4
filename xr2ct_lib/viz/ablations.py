"""Fig. 5 / Fig. 7 counterparts: one patient's slices under several generators."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from xr2ct_lib.viz.volumes import PLANES, plane_slice

CT = {"cmap": "gray", "vmin": -1, "vmax": 1}


def variant_slices(truth: np.ndarray, rows: dict[str, np.ndarray], title: str):
    """Columns: ground truth then each row's volume; rows: the middle axial, coronal and
    sagittal slices. Volumes (D, H, W) in [−1, 1]."""
    vols = {"ground truth": truth, **rows}
    fig, axes = plt.subplots(3, len(vols), figsize=(1.6 * len(vols) + 0.6, 5.4), squeeze=False)
    for c, (name, vol) in enumerate(vols.items()):
        for r, plane in enumerate(PLANES):
            ax = axes[r, c]
            ax.imshow(plane_slice(vol, plane), **CT)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=7)
            if c == 0:
                ax.set_ylabel(plane, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
