"""Scatter plots of 2D projections (PCA, t-SNE, UMAP) of latents and embeddings."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def scatter_groups(ax, xy: np.ndarray, groups: np.ndarray, colors: dict, size: float = 12) -> None:
    """One colour per group; ``colors`` maps a group value to (colour, legend label)."""
    for g, (color, label) in colors.items():
        m = groups == g
        ax.scatter(xy[m, 0], xy[m, 1], s=size, c=color, label=label, alpha=0.75)


def projection_grid(
    projections: dict[str, np.ndarray], groups: np.ndarray, colors: dict, title: str
):
    """One panel per projection method, points coloured by group (Fig. 4 layout)."""
    fig, axes = plt.subplots(1, len(projections), figsize=(13 / 3 * len(projections), 4.2))
    for ax, (name, xy) in zip(np.atleast_1d(axes), projections.items(), strict=True):
        scatter_groups(ax, xy, groups, colors)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pe_scatter(xy: np.ndarray, labels: np.ndarray, title: str, axis: str = "PC"):
    """Points coloured by PE label (no PE blue, PE red)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    colors = {0: ("tab:blue", "no PE"), 1: ("tab:red", "PE")}
    for g, (color, label) in colors.items():
        m = labels == g
        ax.scatter(xy[m, 0], xy[m, 1], s=14, c=color, label=label, alpha=0.7)
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(title)
    ax.legend()
    return fig
