"""Statistics of the paper's Tables 1 and 7: AUC with DeLong CI, DeLong test, Youden, metrics.

DeLong's method has no maintained Python implementation; this one follows the fast
structural-components algorithm of Sun & Xu (2014) and is checked in the tests against
the Mann–Whitney AUC, the explicit O(n₁n₀) placement formula and a bootstrap.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as st
from sklearn.metrics import roc_auc_score, roc_curve


@dataclass(frozen=True)
class AUCResult:
    """An AUC with its confidence interval ``[lo, hi]`` at ``level`` and its variance."""

    auc: float
    lo: float
    hi: float
    var: float
    level: float = 0.95


def _check(y_true, *scores) -> tuple[np.ndarray, list[np.ndarray]]:
    y = np.asarray(y_true).astype(int).ravel()
    if not set(np.unique(y)) <= {0, 1} or len(np.unique(y)) < 2:
        raise ValueError("y_true needs both classes, coded 0/1")
    out = [np.asarray(s, dtype=float).ravel() for s in scores]
    for s in out:
        if s.shape != y.shape:
            raise ValueError(f"scores of length {len(s)} for {len(y)} labels")
        if not np.isfinite(s).all():
            raise ValueError("scores contain NaN or inf")
    return y, out


def _structural_components(y: np.ndarray, scores: list[np.ndarray]):
    """AUCs, and the placement values V10 (per positive) and V01 (per negative) of each score."""
    pos, neg = y == 1, y == 0
    m, n = pos.sum(), neg.sum()
    aucs, v10s, v01s = [], [], []
    for s in scores:
        x, z = s[pos], s[neg]
        rx = st.rankdata(x)
        rz = st.rankdata(z)
        rall = st.rankdata(np.concatenate([x, z]))
        v10 = (rall[:m] - rx) / n  # fraction of negatives below each positive (ties ½)
        v01 = 1.0 - (rall[m:] - rz) / m  # fraction of positives above each negative
        aucs.append(v10.mean())
        v10s.append(v10)
        v01s.append(v01)
    return np.array(aucs), np.array(v10s), np.array(v01s), m, n


def _delong_cov(y, scores):
    aucs, v10, v01, m, n = _structural_components(y, scores)
    if min(m, n) < 2:
        warnings.warn(
            f"DeLong's variance needs two positives and two negatives (got {m} and {n}): "
            "the interval is undefined (NaN)",
            stacklevel=3,
        )
        k = len(scores)
        return aucs, np.full((k, k), np.nan)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


def auc_or_nan(y_true, y_score) -> float:
    """ROC AUC, or NaN when ``y_true`` holds one class only (a small resample, a tiny fold)."""
    y = np.asarray(y_true)
    return float(roc_auc_score(y, y_score)) if len(np.unique(y)) == 2 else float("nan")


def delong_ci(y_true, y_score, level: float = 0.95) -> AUCResult:
    """AUC with DeLong's asymptotic confidence interval (clipped to [0, 1])."""
    y, (s,) = _check(y_true, y_score)
    aucs, cov = _delong_cov(y, [s])
    auc, var = float(aucs[0]), float(cov[0, 0])
    half = st.norm.ppf(0.5 + level / 2) * np.sqrt(var)
    lo, hi = np.clip([auc - half, auc + half], 0.0, 1.0)  # NaN stays NaN
    return AUCResult(auc, float(lo), float(hi), var, level)


def delong_test(y_true, score_a, score_b) -> dict[str, float]:
    """DeLong's test of two correlated AUCs on the same patients (two-sided)."""
    y, (a, b) = _check(y_true, score_a, score_b)
    aucs, cov = _delong_cov(y, [a, b])
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if np.isnan(var):
        z, p = float("nan"), float("nan")
    elif var <= 1e-15:
        z, p = 0.0, 1.0
    else:
        z = diff / np.sqrt(var)
        p = float(2 * st.norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "z": float(z), "p": p}


def bootstrap_auc_ci(
    y_true, y_score, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> AUCResult:
    """Percentile CI of the AUC over stratified bootstrap resamples."""
    y, (s,) = _check(y_true, y_score)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    vals = np.empty(n_boot)
    for i in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        vals[i] = roc_auc_score(y[idx], s[idx])
    a = (1 - level) / 2
    lo, hi = (float(q) for q in np.quantile(vals, [a, 1 - a]))
    return AUCResult(float(roc_auc_score(y, s)), lo, hi, float(vals.var()), level)


def youden_threshold(y_true, y_score) -> float:
    """The threshold maximising sensitivity + specificity − 1 (first of ties)."""
    y, (s,) = _check(y_true, y_score)
    fpr, tpr, thr = roc_curve(y, s)
    k = int(np.argmax(tpr - fpr))
    return float(min(thr[k], s.max()))  # roc_curve's first threshold is +inf


def binary_metrics(y_true, y_score, threshold: float) -> dict[str, float]:
    """Accuracy, specificity, sensitivity, PPV, NPV at ``score ≥ threshold``; NaN for 0/0."""
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(y_score, dtype=float).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores of length {len(s)} for {len(y)} labels")
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))

    def ratio(a, b):
        return a / b if b else float("nan")

    return {
        "accuracy": ratio(tp + tn, len(y)),
        "specificity": ratio(tn, tn + fp),
        "sensitivity": ratio(tp, tp + fn),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }  # fmt: skip


def mcnemar(y_true, pred_a, pred_b, exact: bool | None = None) -> dict[str, float]:
    """McNemar's test on the correctness of two readings of the same cases (statsmodels).

    ``exact=None`` uses the exact binomial test when fewer than 25 cases are discordant,
    the continuity-corrected chi-square otherwise. ``b``: cases only ``a`` got right;
    ``c``: cases only ``b`` got right.
    """
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    y = np.asarray(y_true).astype(int).ravel()
    a, b = np.asarray(pred_a).astype(int).ravel(), np.asarray(pred_b).astype(int).ravel()
    if not a.shape == b.shape == y.shape:
        raise ValueError(f"predictions of lengths {len(a)}, {len(b)} for {len(y)} labels")
    ca, cb = a == y, b == y
    table = [[np.sum(ca & cb), np.sum(ca & ~cb)], [np.sum(~ca & cb), np.sum(~ca & ~cb)]]
    if exact is None:
        exact = table[0][1] + table[1][0] < 25
    r = sm_mcnemar(table, exact=exact, correction=True)
    return {"statistic": float(r.statistic), "p": float(r.pvalue), "exact": exact,
            "b": int(table[0][1]), "c": int(table[1][0])}  # fmt: skip


def binomial_test(successes: int, n: int, p0: float = 0.5, level: float = 0.95) -> dict:
    """Two-sided exact binomial test of a proportion against ``p0`` (scipy), Clopper–Pearson CI."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 ≤ successes ≤ n and n > 0, got {successes} of {n}")
    r = st.binomtest(int(successes), int(n), p0)
    ci = r.proportion_ci(confidence_level=level, method="exact")
    return {"successes": int(successes), "n": int(n), "proportion": successes / n,
            "lo": float(ci.low), "hi": float(ci.high), "p": float(r.pvalue)}  # fmt: skip


def format_ci(r: AUCResult, digits: int = 2) -> str:
    """``"0.83 (0.75–0.91)"``."""
    return f"{r.auc:.{digits}f} ({r.lo:.{digits}f}–{r.hi:.{digits}f})"
