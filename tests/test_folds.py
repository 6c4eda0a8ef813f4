"""Stratified folds, the committed manifest's folds and the cross-validation harness."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from xr2ct_lib.config import DEFAULT_MANIFEST
from xr2ct_lib.data.folds import fold_split, make_stratified_folds
from xr2ct_lib.data.manifest import make_phantom_manifest
from xr2ct_lib.eval import stats
from xr2ct_lib.eval.crossval import CVResult, results_table, run_cv
from xr2ct_lib.viz.curves import roc_curves


@pytest.mark.parametrize("n_pos,n", [(41, 120), (8, 24)])
def test_folds_stratified_disjoint_and_covering(n_pos, n):
    labels = np.array([1] * n_pos + [0] * (n - n_pos))
    folds = make_stratified_folds(labels, 6, seed=1)
    assert set(folds) == set(range(6))
    expected = n_pos / 6
    per_fold = np.bincount(folds[labels == 1], minlength=6)
    assert np.all(np.abs(per_fold - expected) < 1)  # within ±1 patient of the expected PE count
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    for k in range(6):
        s = fold_split(folds, k)
        assert set(s["test"]) == set(np.flatnonzero(folds == k))
        assert set(s["val"]) == set(np.flatnonzero(folds == (k + 1) % 6))
        tr, va, te = (set(s[p]) for p in ("train", "val", "test"))
        assert tr.isdisjoint(va) and tr.isdisjoint(te) and va.isdisjoint(te)
        assert tr | va | te == set(range(n))
    with pytest.raises(ValueError, match="out of range"):
        fold_split(folds, 6)


def test_committed_manifest_matches_rebuilt_folds():
    committed = pd.read_csv(DEFAULT_MANIFEST, dtype={"patient_id": str})
    rebuilt = make_phantom_manifest()
    assert len(committed) == 120 and committed.patient_id.is_unique
    assert 0.31 < committed.pe_label.mean() < 0.37
    assert set(committed.fold) == set(range(6))
    assert (committed.fold.to_numpy() == rebuilt.fold.to_numpy()).all()
    assert (committed.pe_label.to_numpy() == rebuilt.pe_label.to_numpy()).all()
    pe = committed.groupby("fold").pe_label.sum().to_numpy()
    assert np.all(np.abs(pe - committed.pe_label.sum() / 6) < 1)


def _planted(seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array([1] * 40 + [0] * 80)
    folds = make_stratified_folds(labels, 6, seed=seed)
    return rng, labels, folds, labels + rng.normal(0, 0.7, 120)


def test_run_cv_planted_signal_and_shuffled_labels():
    rng, labels, folds, signal = _planted()
    calls = []

    def fit_predict(split):  # "training" = picking the sign on the training folds only
        calls.append(split)
        sign = np.sign(np.corrcoef(signal[split["train"]], labels[split["train"]])[0, 1])
        return {"val": sign * signal[split["val"]], "test": sign * signal[split["test"]]}

    res = run_cv(fit_predict, labels, folds, [f"P{i}" for i in range(120)], progress=False)
    assert len(calls) == 6 and [f.fold for f in res.folds] == list(range(6))
    pooled = res.pooled()
    assert len(pooled) == 120 and pooled.patient_id.is_unique
    assert res.auc().auc > 0.8
    for f in res.folds:  # threshold is Youden on that fold's validation scores
        assert f.threshold == stats.youden_threshold(f.val_y_true, f.val_y_score)
        assert (pooled[pooled.fold == f.fold].pred == (f.y_score >= f.threshold)).all()
    s = res.summary("signal")
    assert s["auc"] == res.auc().auc and s["AUC"] == stats.format_ci(res.auc())
    m = stats.binary_metrics(pooled.y_true, pooled.pred, 0.5)
    assert s["accuracy"] == m["accuracy"] and s["sensitivity"] == m["sensitivity"]
    table = res.per_fold_table()
    assert list(table.index) == list(range(6)) and table.n.sum() == 120 and table.PE.sum() == 40

    null_aucs = []
    for _ in range(5):
        shuffled = rng.permutation(labels)
        null_aucs.append(run_cv(fit_predict, shuffled, folds, progress=False).auc().auc)
    assert abs(np.mean(null_aucs) - 0.5) < 0.1

    sub = run_cv(fit_predict, labels, folds, folds_to_run=[2], progress=False)
    assert [f.fold for f in sub.folds] == [2] and len(sub.pooled()) == (folds == 2).sum()


def test_run_cv_rejects_wrong_lengths():
    _, labels, folds, signal = _planted()
    with pytest.raises(ValueError, match="fold 0: fit_predict returned 3 val scores"):
        run_cv(lambda s: {"val": [0, 1, 2], "test": signal[s["test"]]}, labels, folds,
               progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="ids"):
        run_cv(lambda s: {}, labels, folds, ids=["a"], progress=False)


def test_csv_round_trip_table_and_figure(tmp_path):
    _, labels, folds, signal = _planted(1)
    ids = [f"P{i:03d}" for i in range(120)]
    res = run_cv(lambda s: {"val": signal[s["val"]], "test": signal[s["test"]]}, labels, folds,
                 ids, progress=False)  # fmt: skip
    other = run_cv(lambda s: {"val": -signal[s["val"]], "test": signal[s["test"]] * 0.1 + 1},
                   labels, folds, ids, progress=False)  # fmt: skip
    res.to_csv(tmp_path, "m")
    assert {p.name for p in tmp_path.iterdir()} == {"m_pooled.csv", "m_folds.csv", "m_val.csv"}
    back = CVResult.from_csv(tmp_path, "m")
    pd.testing.assert_frame_equal(back.pooled(), res.pooled(), check_dtype=False)
    for a, b in zip(back.folds, res.folds, strict=True):
        assert a.threshold == pytest.approx(b.threshold)
        np.testing.assert_allclose(a.val_y_score, b.val_y_score)
        assert a.ids == b.ids
    # a later chapter compares two models on the same patients by DeLong
    t = stats.delong_test(back.pooled().y_true, back.pooled().y_score, other.pooled().y_score)
    assert t["auc_a"] == pytest.approx(res.auc().auc)
    with pytest.raises(FileNotFoundError, match="nope"):
        CVResult.from_csv(tmp_path, "nope")

    table = results_table({"signal": res, "other": other})
    assert list(table.index) == ["signal", "other"]
    assert list(table.columns[:7]) == ["AUC (95% CI)", "Accuracy", "Specificity",
                                       "Sensitivity", "PPV", "NPV", "fold AUC"]  # fmt: skip
    assert table.loc["signal", "patients"] == 120

    ax = roc_curves({"signal": res, "other": other}, n_boot=50)
    assert len(ax.collections) == 2  # one bootstrap band per model
    assert "signal: " + stats.format_ci(res.auc()) in [t.get_text() for t in ax.get_legend().texts]
    ax2 = roc_curves({"signal": res}, ci_band=False)
    assert len(ax2.collections) == 0
