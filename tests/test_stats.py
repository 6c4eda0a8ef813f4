"""DeLong, bootstrap, Youden, operating-point metrics and McNemar."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from xr2ct_lib.eval import stats


def _sample(n=120, shift=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    y[:2] = [0, 1]
    return y, rng.normal(size=n) + shift * y


def _placement_variance(y, s):
    """DeLong's variance from its definition, O(n1·n0), with ½ for ties."""
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    return v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(z)


def test_delong_auc_is_mann_whitney_and_variance_is_the_placement_formula():
    y, s = _sample()
    s = np.round(s, 1)  # ties
    r = stats.delong_ci(y, s)
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic
    assert r.auc == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()))
    assert r.var == pytest.approx(_placement_variance(y, s))
    assert r.lo < r.auc < r.hi


def test_hanley_mcneil_1982_ct_ratings():
    # Hanley & McNeil (1982), Radiology 143:29, Table 1: five-point CT ratings of 58 normal
    # and 51 abnormal patients; published area 0.893, standard error 0.032 (their formula).
    s = np.repeat(np.tile(np.arange(1, 6), 2), [33, 6, 6, 11, 2, 3, 2, 2, 11, 33])
    y = np.r_[np.zeros(58, int), np.ones(51, int)]
    r = stats.delong_ci(y, s)
    assert r.auc == pytest.approx(0.893, abs=5e-4)
    assert np.sqrt(r.var) == pytest.approx(0.032, rel=0.1)  # DeLong ≈ Hanley–McNeil here
    assert r.hi - r.lo == pytest.approx(2 * 1.959964 * np.sqrt(r.var))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="both classes"):
        stats.delong_ci([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="length"):
        stats.delong_ci([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        stats.delong_test([0, 1], [0.1, np.nan], [0.1, 0.2])


def test_delong_variance_close_to_bootstrap():
    y, s = _sample(n=300, shift=0.8, seed=3)
    r = stats.delong_ci(y, s)
    b = stats.bootstrap_auc_ci(y, s, n_boot=1500, seed=1)
    assert b.var == pytest.approx(r.var, rel=0.2)
    assert abs(b.lo - r.lo) < 0.03 and abs(b.hi - r.hi) < 0.03


def test_delong_test_identical_better_symmetric_and_calibrated():
    y, s = _sample(n=200)
    same = stats.delong_test(y, s, s)
    assert same["z"] == 0 and same["p"] == 1
    rng = np.random.default_rng(5)
    better = s + 1.5 * y
    t = stats.delong_test(y, better, s)
    assert t["auc_a"] > t["auc_b"] and t["p"] < 1e-3
    t2 = stats.delong_test(y, s, better)
    assert t2["z"] == pytest.approx(-t["z"]) and t2["p"] == pytest.approx(t["p"])
    rejections = 0
    for i in range(200):  # two equally good, independent scores: p roughly uniform
        y, _ = _sample(n=80, seed=100 + i)
        a = y + rng.normal(size=80)
        b = y + rng.normal(size=80)
        rejections += stats.delong_test(y, a, b)["p"] < 0.05
    assert 0.01 <= rejections / 200 <= 0.12


def test_youden_known_optimum_and_hand_counted_metrics():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # thresholds: 0.7 → sens 3/4, spec 4/4 (J = .75); 0.4 → sens 4/4, spec 3/4 (J = .75);
    # the first of the ties in roc_curve's order (decreasing threshold) is 0.7
    assert stats.youden_threshold(y, s) == pytest.approx(0.7)
    m = stats.binary_metrics(y, s, 0.4)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (4, 1, 3, 0)
    assert m["accuracy"] == pytest.approx(7 / 8) and m["specificity"] == pytest.approx(3 / 4)
    assert m["sensitivity"] == 1 and m["ppv"] == pytest.approx(4 / 5) and m["npv"] == 1
    assert np.isnan(stats.binary_metrics(y, s, 2.0)["ppv"])  # nothing predicted positive
    assert stats.format_ci(stats.AUCResult(0.834, 0.751, 0.912, 0.0)) == "0.83 (0.75–0.91)"


def test_mcnemar_matches_statsmodels_table():
    from statsmodels.stats.contingency_tables import mcnemar

    y = np.array([1] * 30 + [0] * 30)
    a = y.copy()
    b = y.copy()
    a[:3] = 0  # a wrong on 3
    b[3:15] = 0  # b wrong on 12
    r = stats.mcnemar(y, a, b)
    ref = mcnemar([[45, 12], [3, 0]], exact=True)
    assert r["p"] == pytest.approx(ref.pvalue) and r["exact"]


def test_delong_interval_is_undefined_with_a_single_positive():
    y = np.array([1, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.4, 0.2, 0.95])
    with pytest.warns(UserWarning, match="two positives"):
        r = stats.delong_ci(y, s)
    assert r.auc == pytest.approx(0.75)
    assert np.isnan(r.lo) and np.isnan(r.hi) and np.isnan(r.var)
    with pytest.warns(UserWarning, match="two positives"):
        t = stats.delong_test(y, s, s[::-1])
    assert np.isnan(t["p"]) and np.isfinite(t["diff"])


def test_auc_or_nan_is_the_delong_auc_and_nan_for_one_class():
    from xr2ct_lib.eval.stats import auc_or_nan, delong_ci

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    s = y + rng.normal(0, 1, 40)
    assert auc_or_nan(y, s) == pytest.approx(delong_ci(y, s).auc)
    assert np.isnan(auc_or_nan(np.ones(5), s[:5]))
