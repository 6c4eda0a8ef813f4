"""Six-fold cross-validation as the paper evaluates its classifiers.

For each test fold k: train on the four training folds, choose the Youden threshold on the
validation fold (k+1) % 6, score the test fold. Every patient is tested once; the pooled
test scores give the AUC with its DeLong CI and the operating-point metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xr2ct_lib.checkpoint import atomic_write_text
from xr2ct_lib.eval import stats
from xr2ct_lib.eval.folds import fold_split
from xr2ct_lib.utils import progress


@dataclass
class FoldResult:
    fold: int
    threshold: float
    y_true: np.ndarray
    y_score: np.ndarray
    ids: list[str]
    val_y_true: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_y_score: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class CVResult:
    folds: list[FoldResult]

    def pooled(self) -> pd.DataFrame:
        """One row per test patient: id, fold, label, score, prediction at its fold's threshold."""
        parts = [
            pd.DataFrame({"patient_id": f.ids, "fold": f.fold, "y_true": f.y_true,
                          "y_score": f.y_score, "pred": (f.y_score >= f.threshold).astype(int)})
            for f in self.folds
        ]  # fmt: skip
        return pd.concat(parts, ignore_index=True)

    def auc(self, level: float = 0.95) -> stats.AUCResult:
        p = self.pooled()
        return stats.delong_ci(p.y_true, p.y_score, level)

    def summary(self, name: str) -> dict:
        p = self.pooled()
        r = self.auc()
        y, pred = p.y_true.to_numpy(), p.pred.to_numpy()
        m = stats.binary_metrics(y, pred, 0.5)  # predictions already thresholded per fold
        fold_aucs = [
            stats.delong_ci(f.y_true, f.y_score).auc for f in self.folds if len(set(f.y_true)) == 2
        ]
        return {
            "Model": name,
            "AUC (95% CI)": stats.format_ci(r),
            "Accuracy": m["accuracy"],
            "Specificity": m["specificity"],
            "Sensitivity": m["sensitivity"],
            "PPV": m["ppv"],
            "NPV": m["npv"],
            "fold AUC": f"{np.mean(fold_aucs):.2f} ± {np.std(fold_aucs):.2f}" if fold_aucs else "",
            "folds": len(self.folds),
            "patients": len(p),
            "auc": r.auc, "auc_lo": r.lo, "auc_hi": r.hi,
        }  # fmt: skip

    def per_fold_table(self) -> pd.DataFrame:
        rows = []
        for f in self.folds:
            m = stats.binary_metrics(f.y_true, f.y_score, f.threshold)
            both = len(set(f.y_true)) == 2
            rows.append({
                "fold": f.fold, "n": len(f.y_true), "PE": int(f.y_true.sum()),
                "AUC": stats.delong_ci(f.y_true, f.y_score).auc if both else float("nan"),
                "threshold": f.threshold, "accuracy": m["accuracy"],
                "sensitivity": m["sensitivity"], "specificity": m["specificity"],
            })  # fmt: skip
        return pd.DataFrame(rows).set_index("fold")

    def to_csv(self, directory: str | Path, name: str) -> None:
        d = Path(directory)
        atomic_write_text(d / f"{name}_pooled.csv", self.pooled().to_csv(index=False))
        folds = pd.DataFrame({"fold": [f.fold for f in self.folds],
                              "threshold": [f.threshold for f in self.folds]})  # fmt: skip
        atomic_write_text(d / f"{name}_folds.csv", folds.to_csv(index=False))

    @classmethod
    def from_csv(cls, directory: str | Path, name: str) -> CVResult:
        d = Path(directory)
        p = pd.read_csv(d / f"{name}_pooled.csv", dtype={"patient_id": str})
        thr = pd.read_csv(d / f"{name}_folds.csv").set_index("fold")["threshold"]
        folds = []
        for k, g in p.groupby("fold", sort=True):
            folds.append(FoldResult(int(k), float(thr[k]), g.y_true.to_numpy(),
                                    g.y_score.to_numpy(), g.patient_id.tolist()))  # fmt: skip
        return cls(folds)


def run_cv(
    fit_predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    labels,
    folds,
    ids=None,
    n_folds: int = 6,
    folds_to_run=None,
    show_progress: bool = True,
) -> CVResult:
    """Run ``fit_predict(split) -> {"val": scores, "test": scores}`` on each test fold."""
    labels = np.asarray(labels).astype(int)
    folds = np.asarray(folds).astype(int)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(labels))]
    todo = list(range(n_folds)) if folds_to_run is None else list(folds_to_run)
    results = []
    for k in progress(todo, desc="folds", unit="fold", disable=not show_progress):
        split = fold_split(folds, k, n_folds)
        out = fit_predict(split)
        yv, sv = labels[split["val"]], np.asarray(out["val"], float)
        thr = stats.youden_threshold(yv, sv) if len(set(yv)) == 2 else 0.5
        results.append(FoldResult(
            k, thr, labels[split["test"]], np.asarray(out["test"], float),
            [ids[i] for i in split["test"]], yv, sv,
        ))  # fmt: skip
    return CVResult(results)


def results_table(results: dict[str, CVResult]) -> pd.DataFrame:
    """The paper's Table 1 layout, one row per model."""
    cols = ["AUC (95% CI)", "Accuracy", "Specificity", "Sensitivity", "PPV", "NPV", "fold AUC",
            "folds", "patients"]  # fmt: skip
    rows = [r.summary(name) for name, r in results.items()]
    return pd.DataFrame(rows).set_index("Model")[cols]


def roc_figure(results: dict[str, CVResult], ax=None, n_boot: int = 300, seed: int = 0):
    """Pooled ROC curves with a bootstrap 95 % band; the legend gives AUC with DeLong CI."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    grid = np.linspace(0, 1, 101)
    rng = np.random.default_rng(seed)
    for name, r in results.items():
        p = r.pooled()
        y, s = p.y_true.to_numpy(), p.y_score.to_numpy()
        fpr, tpr, _ = roc_curve(y, s)
        line = ax.plot(fpr, tpr, lw=1.5, label=f"{name}: {stats.format_ci(r.auc())}")[0]
        curves = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(y), len(y))
            if len(set(y[idx])) < 2:
                continue
            f, t, _ = roc_curve(y[idx], s[idx])
            curves.append(np.interp(grid, f, t))
        if curves:
            lo, hi = np.quantile(curves, [0.025, 0.975], axis=0)
            ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8)
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(fontsize=7, loc="lower right")
    return ax
