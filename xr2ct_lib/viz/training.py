"""Figures of chapter 4: loss curves of the live run beside the shipped bundle's, and samples."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

STAGE_NAMES = {"uncond": "unconditional", "drr": "DRR-conditional", "cxr": "X-ray-conditional"}


def _smooth(values: pd.Series, n: int) -> pd.Series:
    return values.rolling(max(1, n), min_periods=1).mean()


def _stages(ax, curve: pd.DataFrame, title: str, smooth: int) -> None:
    """Diffusion loss per step, the three stages one after the other."""
    offset = 0
    for stage, g in curve.groupby("part", sort=False):
        if stage not in STAGE_NAMES:
            continue
        steps = np.arange(len(g)) + offset
        (line,) = ax.plot(steps, _smooth(g["loss"], smooth), lw=1.5,
                          label=f"{STAGE_NAMES[stage]} ({len(g)} steps)")  # fmt: skip
        ax.plot(steps, g["loss"], lw=0.5, alpha=0.3, color=line.get_color())
        offset += len(g)
    ax.set_xlabel("optimiser step (all stages)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def diffusion_curve(history: pd.DataFrame) -> pd.DataFrame:
    """A live run's history (stage, step, total) in the shipped ``loss_curve.csv`` layout."""
    return pd.DataFrame({"part": history["stage"], "step": history["step"],
                         "loss": history["total"]})  # fmt: skip


def loss_curves(live: pd.DataFrame, shipped: pd.DataFrame | None, ylabel: str):
    """Live (short schedule) beside shipped (long schedule) diffusion losses, same y axis.

    ``live`` and ``shipped`` are in the ``loss_curve.csv`` layout (part, step, loss).
    """
    n = 1 if shipped is None else 2
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 3.2), sharey=True, squeeze=False)
    _stages(axes[0, 0], live, "trained live in this chapter", smooth=10)
    if shipped is not None:
        per = max(1, len(shipped) // 200)
        _stages(axes[0, 1], shipped, "shipped bundle (`make weights`)", smooth=10 * per)
    axes[0, 0].set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def sample_grid(rows: dict[str, dict[str, np.ndarray]], ids: list[str]):
    """Middle axial slice: one row per volume kind (ground truth, live, shipped...)."""
    fig, axes = plt.subplots(len(rows), len(ids), figsize=(2.4 * len(ids), 2.5 * len(rows)),
                             squeeze=False)  # fmt: skip
    for r, (name, vols) in enumerate(rows.items()):
        for c, pid in enumerate(ids):
            v = vols[pid]
            axes[r, c].imshow(v[v.shape[0] // 2], cmap="gray", vmin=-1, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(pid, fontsize=8)
            if c == 0:
                axes[r, c].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return fig


def runs_table(history: pd.DataFrame, schedule, provenance: dict | None) -> pd.DataFrame:
    """Steps per stage, final X-ray-stage loss and seconds: the live run and the shipped one."""
    final = history[history["stage"] == "cxr"]["total"].tail(10).mean()
    steps = dict(zip(STAGE_NAMES, schedule.diffusion, strict=True))
    rows = [{"run": "live (this chapter)", **steps, "final loss": final,
             "seconds": history["sec"].sum()}]  # fmt: skip
    if provenance:
        rows.append({"run": "shipped (make weights)",
                     **dict(zip(STAGE_NAMES, provenance["schedule"]["diffusion"], strict=True)),
                     "final loss": provenance["final_losses"].get("diffusion_cxr"),
                     "seconds": provenance["seconds"]["diffusion"]})  # fmt: skip
    return pd.DataFrame(rows).set_index("run")
