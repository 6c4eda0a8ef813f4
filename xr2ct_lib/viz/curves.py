"""Curves: a model's training losses, and the pooled ROC curves of cross-validated classifiers."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from xr2ct_lib.eval.crossval import CVResult
from xr2ct_lib.eval.stats import format_ci
from xr2ct_lib.utils import Skipped


def training_curves(
    history: pd.DataFrame,
    columns: dict[str, str],
    ylabel: str,
    title: str,
    logy: bool = False,
    x: str = "step",
):
    """Loss columns of a training history against ``x``; ``columns`` maps column → legend label.

    Columns absent from the history are skipped (e.g. a stage that did not run).
    """
    fig, ax = plt.subplots(figsize=(6, 2.8))
    for col, label in columns.items():
        if col in history:
            ax.plot(history[x], history[col], lw=0.8, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return fig


def roc_curves(
    results: dict[str, CVResult], ax=None, ci_band: bool = True, n_boot: int = 300, seed: int = 0
):
    """Pooled ROC curves with a stratified-bootstrap 95 % band; legend: AUC with DeLong CI."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    grid = np.linspace(0, 1, 101)
    rng = np.random.default_rng(seed)
    for name, r in results.items():
        p = r.pooled()
        y, s = p.y_true.to_numpy(), p.y_score.to_numpy()
        fpr, tpr, _ = roc_curve(y, s)
        line = ax.plot(fpr, tpr, lw=1.5, label=f"{name}: {format_ci(r.auc())}")[0]
        if not ci_band:
            continue
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        curves = []
        for _ in range(n_boot):
            idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
            f, t, _ = roc_curve(y[idx], s[idx])
            curves.append(np.interp(grid, f, t))
        lo, hi = np.quantile(curves, [0.025, 0.975], axis=0)
        ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8)
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=8.5, loc="lower right")
    return ax


def roc_figure(results: dict[str, CVResult], seed: int = 0):
    """:func:`roc_curves` of Table 1's rows on a figure of their own, titled."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    roc_curves(results, ax=ax, seed=seed)
    ax.set_title("ROC, pooled test folds (95 % bootstrap band)")
    return fig


def output_auc_bars(table: pd.DataFrame | Skipped, title: str):
    """Horizontal bars of a multi-output reader's AUC per output (rows of ``table``), one bar
    per column ``"<group>: AUC"`` (e.g. the cohort and fresh patients), from chance (0.5); a
    skipped table gives a skipped figure."""
    from xr2ct_lib.train.readers.cxr import output_label

    if isinstance(table, Skipped):
        return table

    cols = [c for c in table.columns if str(c).endswith(": AUC")]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(table) + 1.2))
    pos = np.arange(len(table))[::-1]
    height = 0.8 / max(len(cols), 1)
    for i, c in enumerate(cols):
        ax.barh(pos + (len(cols) / 2 - i - 0.5) * height, table[c].fillna(0.5) - 0.5, height,
                left=0.5, label=c.removesuffix(": AUC"))  # fmt: skip
    ax.axvline(0.5, color="0.4", lw=0.8, ls="--")
    ax.set_yticks(pos, [output_label(k) for k in table.index])
    ax.set_xlim(0.3, 1.0)
    ax.set_xlabel("AUC against the simulation's ground truth (0.5: chance)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
