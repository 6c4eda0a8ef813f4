"""auc_by_burden compares each clot-burden class with the patients without PE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xr2ct_lib.data.hu_window import PAPER_WINDOW
from xr2ct_lib.eval.crossval import CVResult, FoldResult
from xr2ct_lib.eval.signal import auc_by_burden
from xr2ct_lib.eval.stats import delong_ci


def test_auc_by_burden_per_class_against_no_pe():
    rng = np.random.default_rng(0)
    burden = np.array(["none"] * 12 + ["central"] * 4 + ["lobar"] * 4)
    ids = [f"P{i:02d}" for i in range(len(burden))]
    y = (burden != "none").astype(int)
    score = rng.normal(size=len(y))
    score[burden == "central"] += 10  # central found, lobar at chance
    folds = [FoldResult(k, 0.0, y[k::2], score[k::2], ids[k::2]) for k in range(2)]
    records = pd.DataFrame({"burden": burden}, index=ids)
    ct = np.full((len(y), 4, 4, 4), -1.0)
    clot = np.zeros(ct.shape, np.uint8)
    clot[y == 1, 1:3, 1:3, 1:3] = 1
    ct[burden == "central", 1:3, 1:3, 1:3] = PAPER_WINDOW.to_unit(50.0)
    tab = auc_by_burden(CVResult(folds), records, ct, clot, ids)
    assert tab.loc["central", "AUC vs no PE"].startswith("1.00")
    neg, lob = burden == "none", burden == "lobar"
    expect = delong_ci(np.r_[np.zeros(12), np.ones(4)], np.r_[score[neg], score[lob]]).auc
    assert tab.loc["lobar", "AUC vs no PE"].startswith(f"{expect:.2f}")
    assert tab.loc["central", "clot voxel HU, median"] == pytest.approx(50.0, abs=0.1)
    assert tab.loc["lobar", "clot voxel HU, median"] == pytest.approx(-100.0)
    assert (tab["clot voxels, median"] == 8).all()
    with pytest.raises(ValueError, match="burden"):
        auc_by_burden(CVResult(folds), records.drop(columns="burden"), ct, clot, ids)
