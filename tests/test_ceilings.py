"""Ideal-reader ceilings: the exact enumeration agrees with Monte Carlo of the simulation's
own sampler and with a cross-validated logistic regression on the same observations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.preprocessing import OneHotEncoder

from xr2ct_lib.data.phantom.model import FINDINGS, OBSERVATIONS, draw_findings
from xr2ct_lib.eval.ceilings import CEILINGS, ceilings_table, expected_auc, likelihood_ratios


@pytest.fixture(scope="module")
def sample():
    """20 000 patients drawn by the simulation's own sampler, 34 % PE."""
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=20000) < 0.34).astype(int)
    rows = []
    for label in y:
        f = draw_findings(rng, int(label))
        rows.append({"pe_label": int(label), "burden": f["burden"], "reflux": f["reflux"],
                     **{k: f[k] for k in FINDINGS}})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("modality", ["xray", "shared", "ct_signs", "ct_central_lobar"])
def test_exact_ceiling_matches_monte_carlo_and_logistic_regression(sample, modality):
    exact = expected_auc(modality)
    y = sample["pe_label"].to_numpy()
    lr = likelihood_ratios(sample, modality)
    mc = roc_auc_score(y, np.where(np.isfinite(lr), lr, 1e12))
    assert abs(mc - exact) < 0.015, (mc, exact)
    # an independent reader: logistic regression on the one-hot observations, out of fold;
    # it cannot beat the likelihood ratio, and on these few patterns it comes close
    observe = OBSERVATIONS[modality][1]
    obs = [observe({**r, "state": r["burden"]}) for r in sample.to_dict("records")]
    x = OneHotEncoder().fit_transform(np.asarray(obs))
    p = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=5,
                          method="predict_proba")[:, 1]  # fmt: skip
    logit = roc_auc_score(y, p)
    assert exact - 0.03 < logit < exact + 0.015, (logit, exact)


def test_ceilings_are_ordered_and_tabulated(sample):
    aucs = {m: expected_auc(m) for m in CEILINGS}
    assert 0.65 < aucs["shared"] <= aucs["xray"] < aucs["ct_signs"] < aucs["ct_central_lobar"]
    assert aucs["ct_all_clots"] == pytest.approx(1.0)
    table = ceilings_table(sample.iloc[:300])
    assert list(table.index) == list(CEILINGS.values())
    assert {"reads", "AUC", "95% CI", "population AUC"} <= set(table.columns)
    assert table.loc[CEILINGS["ct_all_clots"], "AUC"] == 1.0
    # a record that the model cannot produce is refused, not scored
    bad = sample.iloc[:1].assign(burden="none", pe_label=0, reflux=1, rv_strain=0)
    with pytest.raises(ValueError, match="impossible"):
        likelihood_ratios(bad, "ct_signs")


def test_table1_beside_the_ceilings_and_its_reading(sample):
    from xr2ct_lib.eval.ceilings import beside_table1
    from xr2ct_lib.eval.crossval import CVResult, FoldResult, delong_table, reading, results_table

    recs = sample.iloc[:300]
    y = recs["pe_label"].to_numpy()
    rng = np.random.default_rng(0)
    ids = [f"P{i}" for i in range(len(y))]
    res = {
        name: CVResult([FoldResult(k, 0.5, y[k::2], (y + rng.normal(0, sd, len(y)))[k::2],
                                   ids[k::2]) for k in (0, 1)])
        for name, sd in (("good", 0.3), ("poor", 3.0))
    }  # fmt: skip
    t1 = results_table(res)
    b = beside_table1(t1, recs)
    ceil = ceilings_table(recs)
    assert b.index[:2].tolist() == ["good", "poor"] and len(b) == 2 + len(CEILINGS)
    xray = b.loc[f"ceiling: {CEILINGS['xray']}"]
    assert xray["AUC (95% CI)"].startswith(f"{ceil.loc[CEILINGS['xray'], 'AUC']:.2f} (")
    assert xray["patients"] == 300 and xray["kind"].startswith("ceiling")
    assert len(beside_table1(t1, pd.DataFrame())) == 2  # a real cohort: no ceilings
    text = reading(res, b, delong_table(res))
    d = delong_table(res).iloc[0]
    assert f"DeLong p = {d['p']:.3g}: they differ" in text  # good ≫ poor on 300 patients
    assert t1.loc["good", "AUC (95% CI)"] in text and "X-ray" in text
    assert "CI lies above 0.5" in next(x for x in text.splitlines() if x.startswith("- good:"))
    flipped = {"flipped": CVResult([FoldResult(f.fold, f.threshold, f.y_true, -f.y_score, f.ids)
                                    for f in res["good"].folds])}  # fmt: skip
    noise = {"noise": CVResult([FoldResult(f.fold, f.threshold, f.y_true,
                                           rng.normal(size=len(f.y_true)), f.ids)
                                for f in res["good"].folds])}  # fmt: skip
    assert "CI includes 0.5" in reading(noise, b, delong_table(res))
    assert "CI lies below 0.5" in reading(flipped, b, delong_table(res))
