"""The tables behind chapters 6–8: pairwise DeLong, saved CV results, latent-space distances,
2D projections and the quality comparison's numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from xr2ct_lib.eval import crossval as cv
from xr2ct_lib.eval import stats
from xr2ct_lib.eval.latent_space import (
    CONDITIONAL,
    REAL,
    UNCONDITIONAL,
    centroid_distances,
    centroid_permutation_test,
    centroid_reading,
    project_2d,
)
from xr2ct_lib.eval.metrics import compare_quality
from xr2ct_lib.eval.pixel_metrics import psnr
from xr2ct_lib.eval.standins import FeatureNet


def two_models():
    rng = np.random.default_rng(0)
    labels = (np.arange(60) % 3 == 0).astype(int)
    folds = (np.arange(60) // 3) % 6
    signal = labels + rng.normal(0, 0.8, 60)
    ids = [f"P{i:02d}" for i in range(60)]

    def scorer(s):
        return lambda split: {"val": s[split["val"]], "test": s[split["test"]]}

    a = cv.run_cv(scorer(signal), labels, folds, ids, progress=False)
    b = cv.run_cv(scorer(rng.normal(size=60)), labels, folds, ids, folds_to_run=[0, 1, 2],
                  progress=False)  # fmt: skip
    return {"A (signal)": a, "B (noise)": b}, folds


def test_delong_table_compares_each_pair_on_the_patients_both_scored():
    res, folds = two_models()
    table = cv.delong_table(res)
    assert list(table.index) == [("A (signal)", "B (noise)")]
    row = table.iloc[0]
    assert row.patients == np.isin(folds, [0, 1, 2]).sum()  # B scored test folds 0–2 only
    common = res["B (noise)"].pooled().patient_id
    pa = res["A (signal)"].pooled().set_index("patient_id").loc[common]
    pb = res["B (noise)"].pooled().set_index("patient_id").loc[common]
    direct = stats.delong_test(pa.y_true, pa.y_score, pb.y_score)
    assert row.p == pytest.approx(direct["p"]) and row.auc_a == pytest.approx(direct["auc_a"])


def test_results_are_saved_under_their_short_names_and_folds_stack(tmp_path):
    res, _ = two_models()
    cv.save_results(res, tmp_path)
    assert cv.result_name("CTPA only (latent DenseNet)") == "ctpa_only"
    back = cv.CVResult.from_csv(tmp_path, "a")
    pd.testing.assert_frame_equal(back.pooled(), res["A (signal)"].pooled(), check_dtype=False)
    per_fold = cv.per_fold(res)
    assert per_fold.index.names == ["model", "fold"] and len(per_fold) == 6 + 3


def test_centroid_distances_and_projections():
    rng = np.random.default_rng(1)
    groups = {"real CTPA": rng.normal(0, 1, (20, 2, 3, 3)),
              "near": rng.normal(0.1, 1, (20, 2, 3, 3)),
              "far": rng.normal(2.0, 1, (10, 2, 3, 3))}  # fmt: skip
    d = centroid_distances(groups).iloc[:, -1]
    assert list(d.index) == ["near", "far"] and d["near"] < d["far"]
    assert d["far"] == pytest.approx(
        np.linalg.norm(groups["far"].mean(0) - groups["real CTPA"].mean(0))
    )
    x = np.concatenate(list(groups.values()))
    xy = project_2d(x, seed=0, methods=("PCA",))["PCA"]
    assert xy.shape == (50, 2)
    np.testing.assert_allclose(project_2d(x, seed=0, methods=("PCA",))["PCA"], xy)
    with pytest.raises(ValueError, match="unknown projection"):
        project_2d(x, 0, ("LDA",))


@pytest.mark.filterwarnings("ignore:Fréchet distance from 3 and 3 samples")
def test_compare_quality_keeps_the_numbers_behind_the_table():
    rng = np.random.default_rng(2)
    target = rng.uniform(-0.5, 0.5, (3, 1, 8, 16, 16)).astype(np.float32)
    noisy = {"small noise": 0.02, "large noise": 0.2}
    preds = {
        k: target + rng.normal(0, s, target.shape).astype(np.float32) for k, s in noisy.items()
    }
    torch.manual_seed(0)
    conv3d = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten()
    )
    conv2d = torch.nn.Conv2d(1, 4, 3)
    q = compare_quality(
        {k: (p, target) for k, p in preds.items()},
        fvd_net=FeatureNet("c3", conv3d, "test 3D conv"),
        lpips_net=FeatureNet("c2", conv2d, "test 2D conv"),
        lpips_kwargs={"max_slices_per_plane": 4},
    )
    assert list(q.table.index) == ["small noise", "large noise"]
    assert q.networks == "FD-standin: test 3D conv; LPIPS-standin: test 2D conv"
    psnrs = q.mean("PSNR")
    assert psnrs["small noise"] == pytest.approx(psnr(preds["small noise"], target).mean())
    assert psnrs["small noise"] > psnrs["large noise"]
    assert q.mean("LPIPS")["small noise"] < q.mean("LPIPS")["large noise"]


def test_centroid_permutation_test_is_significant_only_when_the_groups_differ():
    rng = np.random.default_rng(1)
    real = rng.normal(0, 1, (40, 8))
    near, far = rng.normal(0.1, 1, (40, 8)), rng.normal(2.0, 1, (20, 8))
    res = centroid_permutation_test({REAL: real, CONDITIONAL: near, UNCONDITIONAL: far},
                                    n_perm=300)  # fmt: skip
    assert res["gain"] > 0 and res["p"] < 0.01  # clearly closer
    # the same distribution, a smaller second group (its centroid is noisier, so farther):
    # rarely significant, where a bootstrap interval tended to exclude zero
    ps = [centroid_permutation_test({REAL: real, CONDITIONAL: rng.normal(0, 1, (40, 8)),
                                     UNCONDITIONAL: rng.normal(0, 1, (4, 8))},
                                    n_perm=200, seed=s)["p"] for s in range(10)]  # fmt: skip
    assert sum(p < 0.05 for p in ps) <= 2
    groups = {REAL: real, CONDITIONAL: near, UNCONDITIONAL: far}
    text = centroid_reading(groups)
    assert "the conditional latents are closer" in text and "40 conditional and 20" in text
    text = centroid_reading({REAL: real, CONDITIONAL: far, UNCONDITIONAL: near})
    assert "unconditional latents sit closer" in text and "farther" in text


def test_ddpm_seconds_scales_the_measured_ddpm_row_to_1000_steps():
    from xr2ct_lib.eval.samplers import ddpm_seconds

    index = pd.Index(["DDIM-20", "DPM++-10", "DDPM-200"], name="sampler")
    table = pd.DataFrame({"s / volume": [2.0, 1.5, 25.3]}, index=index)
    assert ddpm_seconds(table) == pytest.approx(126.5)
    assert ddpm_seconds(table, steps=200) == pytest.approx(25.3)
    assert np.isnan(ddpm_seconds(table.iloc[:2]))
