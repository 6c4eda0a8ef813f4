"""The classifiers' cross-validation harness and the generated-CTPA rows, on planted signals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from xr2ct_lib.config import PROFILES, RunConfig
from xr2ct_lib.eval import classifier_cv as ccv
from xr2ct_lib.eval.generated import generated_rows, load_generated
from xr2ct_lib.files import write_safetensors
from xr2ct_lib.models.latents import LatentNormalizer

# a half volume of 8×32×32 gives latents (4, 8, 8, 8); two test folds, a few epochs
PROFILE = dataclasses.replace(
    PROFILES["smoke"], ct_size=(16, 32, 32), classifier_epochs=3, cv_folds=(0, 1)
)
N = 36


def cohort_arrays():
    """Labels (one PE in three), stratified folds (each fold 2 PE, 4 not), ids."""
    labels = (np.arange(N) % 3 == 0).astype(int)
    folds = (np.arange(N) // 3) % 6
    return labels, folds, [f"P{i:02d}" for i in range(N)]


def planted_latents(labels, seed=0) -> np.ndarray:
    """Normalised latents (N, 2, 4, 8, 8, 8): PE patients have channel 1 raised in both halves."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 0.3, (len(labels), 2, *PROFILE.latent_shape)).astype(np.float32)
    z[labels == 1, :, 1] += 0.8
    return np.clip(z, -1, 1)


@pytest.fixture(scope="module")
def latent_cv(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = RunConfig(PROFILE, run / "manifest.csv", run, seed=0)
    labels, folds, ids = cohort_arrays()
    z = planted_latents(labels)
    return cfg, z, labels, folds, ids, ccv.cv_latent_classifier(cfg, z, labels, folds, ids)


def test_latent_cv_tests_each_patient_of_the_profile_folds_once(latent_cv):
    cfg, z, labels, folds, ids, res = latent_cv
    assert [f.fold for f in res.folds] == [0, 1]  # the profile's cv_folds
    pooled = res.pooled()
    expected = [i for k in (0, 1) for i, p in enumerate(ids) if folds[i] == k]
    assert pooled.patient_id.tolist() == [ids[i] for i in expected]
    np.testing.assert_array_equal(pooled.y_true, labels[expected])
    assert ((0 <= pooled.y_score) & (pooled.y_score <= 1)).all()
    for f in res.folds:  # the threshold comes from the validation fold k + 1
        assert len(f.val_y_true) == (folds == f.fold + 1).sum()
    assert sorted(ccv.fold_models(cfg)) == [0, 1]


def test_saved_fold_models_reproduce_the_cv_scores(latent_cv):
    cfg, z, labels, folds, ids, res = latent_cv
    test = np.flatnonzero(np.isin(folds, [0, 1]))
    scores = ccv.predict_with_fold_models(cfg, z[test], folds[test])
    pooled = res.pooled().set_index("patient_id")
    np.testing.assert_allclose(scores, pooled.loc[[ids[i] for i in test], "y_score"], atol=1e-6)
    with pytest.raises(FileNotFoundError, match="test fold 2"):
        ccv.predict_with_fold_models(cfg, z[:1], [2])


def test_generated_rows_read_generated_latents_with_the_fold_models(latent_cv):
    cfg, z, labels, folds, ids, res = latent_cv
    norm = LatentNormalizer(-3.0, 5.0)
    norm.save(cfg.run_dir / "latents" / "normalizer.json")
    generated = [i for i in range(N) if folds[i] in (0, 1, 2)][::2]  # fold 2 has no model
    for i in generated:
        raw = torch.from_numpy(norm.denormalize(z[i]))
        write_safetensors(cfg.run_dir / "generated" / f"{ids[i]}.safetensors",
                          {"z": raw, "ct": torch.zeros(PROFILE.ct_size)})  # fmt: skip
    assert sorted(load_generated(cfg)) == [ids[i] for i in generated]
    rows = generated_rows(cfg, dict(zip(ids, labels, strict=True)), res)
    scored = [ids[i] for i in generated if folds[i] in (0, 1)]
    pooled = rows.result.pooled().set_index("patient_id")
    assert sorted(pooled.index) == sorted(scored)
    cv_scores = res.pooled().set_index("patient_id").loc[scored, "y_score"]
    np.testing.assert_allclose(pooled.loc[scored, "y_score"], cv_scores, atol=1e-5)
    assert {f.fold: f.threshold for f in rows.result.folds} == {
        f.fold: f.threshold for f in res.folds
    }
    assert "fold(s) [0, 1]" in rows.note


def test_cxr_and_slice_lstm_cv_run_per_fold(tmp_path):
    cfg = RunConfig(dataclasses.replace(PROFILE, classifier_epochs=2), tmp_path / "m.csv", tmp_path)
    labels, folds, ids = cohort_arrays()
    rng = np.random.default_rng(1)
    cxr = rng.random((N, 3, 16, 16)).astype(np.float32)
    cxr[labels == 1, :, 4:10, 4:10] = 1.0  # a bright patch on PE X-rays
    res = ccv.cv_cxr_classifier(cfg, cxr, labels, folds, ids)
    assert [f.fold for f in res.folds] == [0, 1] and len(res.pooled()) == 12
    ct = rng.uniform(-1, 1, (N, 8, 16, 16)).astype(np.float32)
    clot = np.zeros(ct.shape, np.uint8)
    clot[labels == 1, 3:5, 6:9, 6:9] = 1
    ct[clot == 1] = 1.0
    lstm = ccv.cv_slice_lstm(cfg, ct, clot, labels, folds, ids, {"all": None, "4 slices": 4})
    assert list(lstm) == ["all", "4 slices"]
    for r in lstm.values():
        assert [f.fold for f in r.folds] == [0, 1]
        assert r.pooled().patient_id.tolist() == res.pooled().patient_id.tolist()
