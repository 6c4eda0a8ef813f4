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

from xr2ct_lib.data.folds import fold_split
from xr2ct_lib.eval import stats
from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.utils import progress as _progress


@dataclass
class FoldResult:
    """One test fold: its Youden threshold (from validation) and test/validation labels, scores."""

    fold: int
    threshold: float
    y_true: np.ndarray
    y_score: np.ndarray
    ids: list[str]
    val_y_true: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_y_score: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class CVResult:
    """The test folds of one model; pooled metrics, per-fold table, CSV round trip."""

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
        """Pooled test AUC with its DeLong CI."""
        p = self.pooled()
        return stats.delong_ci(p.y_true, p.y_score, level)

    def summary(self, name: str) -> dict:
        """Pooled AUC (DeLong CI) and metrics at each fold's own threshold; mean ± std fold AUC."""
        p = self.pooled()
        r = self.auc()
        y, pred = p.y_true.to_numpy(), p.pred.to_numpy()
        m = stats.binary_metrics(y, pred, 0.5)  # predictions already thresholded per fold
        fold_aucs = [
            stats.delong_ci(f.y_true, f.y_score).auc for f in self.folds if len(set(f.y_true)) == 2
        ]
        mean, std = (float(np.mean(fold_aucs)), float(np.std(fold_aucs))) if fold_aucs else (
            float("nan"), float("nan"))  # fmt: skip
        return {
            "model": name,
            "AUC": stats.format_ci(r),
            "auc": r.auc, "auc_lo": r.lo, "auc_hi": r.hi,
            **{k: m[k] for k in ("accuracy", "specificity", "sensitivity", "ppv", "npv")},
            "fold_auc_mean": mean, "fold_auc_std": std,
            "fold AUC": f"{mean:.2f} ± {std:.2f}" if fold_aucs else "",
            "folds": len(self.folds),
            "patients": len(p),
        }  # fmt: skip

    def per_fold_table(self) -> pd.DataFrame:
        """fold, n, PE, AUC, threshold, accuracy, sensitivity, specificity per test fold."""
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
        """Write ``<name>_pooled.csv``, ``<name>_folds.csv`` and ``<name>_val.csv`` atomically."""
        d = Path(directory)
        atomic_write_text(d / f"{name}_pooled.csv", self.pooled().to_csv(index=False))
        folds = pd.DataFrame({"fold": [f.fold for f in self.folds],
                              "threshold": [f.threshold for f in self.folds]})  # fmt: skip
        atomic_write_text(d / f"{name}_folds.csv", folds.to_csv(index=False))
        val = pd.DataFrame({
            "fold": np.concatenate([np.full(len(f.val_y_true), f.fold) for f in self.folds]),
            "y_true": np.concatenate([f.val_y_true for f in self.folds]).astype(int),
            "y_score": np.concatenate([f.val_y_score for f in self.folds]),
        })  # fmt: skip
        atomic_write_text(d / f"{name}_val.csv", val.to_csv(index=False))

    @classmethod
    def from_csv(cls, directory: str | Path, name: str) -> CVResult:
        """Read what :meth:`to_csv` wrote (``_val.csv`` is optional)."""
        d = Path(directory)
        pooled_path, folds_path = d / f"{name}_pooled.csv", d / f"{name}_folds.csv"
        for path in (pooled_path, folds_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no cross-validation result named {name!r}")
        p = pd.read_csv(pooled_path, dtype={"patient_id": str})
        missing = {"patient_id", "fold", "y_true", "y_score"} - set(p.columns)
        if missing:
            raise ValueError(f"{pooled_path}: missing columns {sorted(missing)}")
        thr = pd.read_csv(folds_path).set_index("fold")["threshold"]
        val_path = d / f"{name}_val.csv"
        val = pd.read_csv(val_path) if val_path.is_file() else None
        folds = []
        for k, g in p.groupby("fold", sort=True):
            if k not in thr.index:
                raise ValueError(f"{folds_path}: no threshold for fold {k}")
            v = val[val.fold == k] if val is not None else None
            folds.append(FoldResult(
                int(k), float(thr[k]), g.y_true.to_numpy().astype(int), g.y_score.to_numpy(),
                g.patient_id.tolist(),
                v.y_true.to_numpy().astype(int) if v is not None else np.zeros(0, int),
                v.y_score.to_numpy() if v is not None else np.zeros(0),
            ))  # fmt: skip
        return cls(folds)


def run_cv(
    fit_predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    labels,
    folds,
    ids=None,
    n_folds: int = 6,
    folds_to_run=None,
    progress: bool = True,
) -> CVResult:
    """Run ``fit_predict(split) -> {"val": scores, "test": scores}`` on each test fold.

    ``split`` is :func:`fold_split` (index arrays ``train``/``val``/``test``); the threshold of
    fold k is the Youden threshold on its validation fold.
    """
    labels = np.asarray(labels).astype(int)
    folds = np.asarray(folds).astype(int)
    if labels.shape != folds.shape:
        raise ValueError(f"{len(labels)} labels but {len(folds)} fold assignments")
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(labels))]
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids for {len(labels)} labels")
    todo = list(range(n_folds)) if folds_to_run is None else [int(k) for k in folds_to_run]
    results = []
    for k in _progress(todo, desc="folds", unit="fold", disable=not progress):
        split = fold_split(folds, k, n_folds)
        out = fit_predict(split)
        sv, st = (np.asarray(out[part], float).ravel() for part in ("val", "test"))
        for part, s in (("val", sv), ("test", st)):
            if len(s) != len(split[part]):
                raise ValueError(f"fold {k}: fit_predict returned {len(s)} {part} scores for "
                                 f"{len(split[part])} {part} patients")  # fmt: skip
        yv = labels[split["val"]]
        if len(set(yv)) < 2:
            raise ValueError(f"fold {k}: validation fold {(k + 1) % n_folds} has one class only; "
                             "no Youden threshold (are the folds stratified?)")  # fmt: skip
        thr = stats.youden_threshold(yv, sv)
        results.append(FoldResult(
            k, thr, labels[split["test"]], st, [ids[i] for i in split["test"]], yv, sv,
        ))  # fmt: skip
    return CVResult(results)


def results_table(results: dict[str, CVResult], digits: int = 3) -> pd.DataFrame:
    """The paper's Table 1 layout, one row per model (plus mean ± std fold AUC and counts)."""
    cols = {"AUC": "AUC (95% CI)", "accuracy": "Accuracy", "specificity": "Specificity",
            "sensitivity": "Sensitivity", "ppv": "PPV", "npv": "NPV", "fold AUC": "fold AUC",
            "folds": "folds", "patients": "patients"}  # fmt: skip
    rows = [r.summary(name) for name, r in results.items()]
    df = pd.DataFrame(rows).set_index("model")[list(cols)].rename(columns=cols)
    df.index.name = "Model"
    return df.round(digits)


def result_name(model: str) -> str:
    """File stem of a model's CV result: ``"CTPA only (latent DenseNet)"`` → ``ctpa_only``."""
    return model.split(" (")[0].replace(" ", "_").lower()


def save_results(results: dict[str, CVResult], directory: str | Path) -> None:
    """:meth:`CVResult.to_csv` of every model under :func:`result_name`."""
    for name, r in results.items():
        r.to_csv(directory, result_name(name))


def per_fold(results: dict[str, CVResult]) -> pd.DataFrame:
    """Every model's :meth:`CVResult.per_fold_table`, one block per model."""
    return pd.concat({k: v.per_fold_table() for k, v in results.items()}, names=["model"])


def delong_table(results: dict[str, CVResult]) -> pd.DataFrame:
    """DeLong's test for every pair of models, on the test patients both scored."""
    pooled = {k: v.pooled().set_index("patient_id") for k, v in results.items()}
    names = list(results)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = pooled[a].index.intersection(pooled[b].index)
            t = stats.delong_test(pooled[a].loc[common, "y_true"], pooled[a].loc[common, "y_score"],
                                  pooled[b].loc[common, "y_score"])  # fmt: skip
            rows.append({"A": a, "B": b, "patients": len(common), **t})
    return pd.DataFrame(rows).set_index(["A", "B"])


def _versus_chance(lo: float, hi: float) -> str:
    if lo > 0.5:
        return "its CI lies above 0.5 (chance)"
    if hi < 0.5:
        return "its CI lies below 0.5: it ranks the patients with PE lower than the others"
    return "its CI includes 0.5 (chance)"


def reading(
    results: dict[str, CVResult], beside: pd.DataFrame, delong: pd.DataFrame,
    data: str = "simulated cohort",
) -> str:  # fmt: skip
    """Markdown that reads Table 1 from the run's own numbers: each model's pooled AUC (and
    where its CI lies against chance) and mean fold AUC, the ceilings on the same patients
    (when ``beside`` has them), and DeLong's test of every pair; ``data`` names the cohort."""
    lines = [f"**This run's numbers** ({data}):", ""]
    for model, r in results.items():
        s = r.summary(model)
        chance = _versus_chance(s["auc_lo"], s["auc_hi"])
        lines.append(f"- {model}: pooled AUC {s['AUC']}, {chance}; "
                     f"mean fold AUC {s['fold AUC']} over {s['folds']} test fold(s), "
                     f"{s['patients']} patients.")  # fmt: skip
    ceil = beside[beside["kind"].str.startswith("ceiling")]
    if len(ceil):
        lines.append("- Ceilings of the simulation on the same patients (ground truth, no "
                     "network): " + "; ".join(f"{i.removeprefix('ceiling: ')} "
                                            f"{r['AUC (95% CI)']}" for i, r in ceil.iterrows())
                     + ".")  # fmt: skip
    for (a, b), r in delong.iterrows():
        verdict = "differ" if r["p"] < 0.05 else "do not differ significantly"
        lines.append(
            f"- {a} vs {b} on {int(r['patients'])} common patients: AUC {r['auc_a']:.2f} vs "
            f"{r['auc_b']:.2f}, DeLong p = {r['p']:.3g}: they {verdict} at 5 %."
        )
    return "\n".join(lines)
