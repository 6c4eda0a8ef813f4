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
from xr2ct_lib.models.normalizer import LatentNormalizer

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
    cfg = RunConfig(PROFILE, run / "manifest.csv", run, seed=0, weights="trained")
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
    scores = ccv.predict_with_fold_models(cfg, z[test], folds[test], [ids[i] for i in test])
    pooled = res.pooled().set_index("patient_id")
    np.testing.assert_allclose(scores, pooled.loc[[ids[i] for i in test], "y_score"], atol=1e-6)
    with pytest.raises(FileNotFoundError, match="test fold 2"):
        ccv.predict_with_fold_models(cfg, z[:1], [2], ids[:1])


def test_a_fold_model_refuses_a_patient_it_was_trained_on(latent_cv):
    cfg, z, labels, folds, ids, res = latent_cv
    seen = int(np.flatnonzero(folds == 3)[0])  # fold 3 trains test fold 0's model
    with pytest.raises(ValueError, match=f"trained on .*{ids[seen]}"):
        ccv.predict_with_fold_models(cfg, z[[seen]], [0], [ids[seen]])


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
    rows = generated_rows(cfg, dict(zip(ids, labels, strict=True)), res,
                          reader="latent_classifier")  # fmt: skip
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
    cfg = RunConfig(
        dataclasses.replace(PROFILE, classifier_epochs=2),
        tmp_path / "m.csv",
        tmp_path,
        weights="trained",
    )
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


def planted_clot_volumes(labels, seed=0):
    """Volumes (N, 8, 16, 16): bright tubes (arteries) in every patient; in PE patients a
    dark plug (the clot, its mask returned) interrupts one of them."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(-0.8, 0.05, (len(labels), 8, 16, 16)).astype(np.float32)
    ct[:, :, 5:7, 3:13] = 0.6  # an artery along x
    ct[:, :, 10:12, 3:13] = 0.6
    clot = np.zeros(ct.shape, np.uint8)
    for i in np.flatnonzero(labels):
        x0 = int(rng.integers(4, 9))
        row = (5, 10)[i % 2]
        clot[i, 2:6, row : row + 2, x0 : x0 + 3] = 1
    ct[clot == 1] = -0.55  # clot ≈ 50 HU inside enhanced lumen
    return ct, clot


@pytest.fixture(scope="module")
def clot_cv(tmp_path_factory):
    run = tmp_path_factory.mktemp("clotrun")
    cfg = RunConfig(
        dataclasses.replace(PROFILE, clot_epochs=25), run / "m.csv", run, seed=0, weights="trained"
    )
    labels, folds, ids = cohort_arrays()
    ct, clot = planted_clot_volumes(labels)
    return (
        cfg,
        ct,
        clot,
        labels,
        folds,
        ids,
        ccv.cv_clot_classifier(cfg, ct, clot, labels, folds, ids),
    )


def test_clot_classifier_finds_planted_defects_and_its_fold_models_reproduce(clot_cv):
    cfg, ct, clot, labels, folds, ids, res = clot_cv
    assert [f.fold for f in res.folds] == [0, 1]
    # 2 PE / 4 non-PE per test fold: the plug is obvious (the mean fold AUC, the paper's
    # statistic; scores of different fold models are not on one scale)
    assert res.summary("clot")["fold_auc_mean"] >= 0.9
    test = np.flatnonzero(np.isin(folds, [0, 1]))
    scores = ccv.predict_volumes_with_fold_models(cfg, ct[test], folds[test],
                                                  [ids[i] for i in test])  # fmt: skip
    pooled = res.pooled().set_index("patient_id")
    np.testing.assert_allclose(scores, pooled.loc[[ids[i] for i in test], "y_score"], atol=1e-5)
    seen = int(np.flatnonzero(folds == 4)[0])  # fold 4 trains test fold 1's model
    with pytest.raises(ValueError, match="trained on"):
        ccv.predict_volumes_with_fold_models(cfg, ct[[seen]], [1], [ids[seen]])


def test_generated_rows_read_volumes_with_the_fold_clot_classifier(clot_cv):
    cfg, ct, clot, labels, folds, ids, res = clot_cv
    test = [i for i in range(N) if folds[i] in (0, 1)]
    # a "generator" that swaps each PE patient's volume with a non-PE one: the clots vanish
    pe, no = [i for i in test if labels[i]], [i for i in test if not labels[i]]
    swapped = {ids[i]: {"ct": ct[no[j % len(no)]]} for j, i in enumerate(pe)}
    swapped |= {ids[i]: {"ct": ct[i]} for i in no}
    faithful = {ids[i]: {"ct": ct[i]} for i in test}
    y = dict(zip(ids, labels, strict=True))
    real = generated_rows(cfg, y, res, generated=faithful)
    lost = generated_rows(cfg, y, res, generated=swapped)
    assert real.result.auc().auc == pytest.approx(res.auc().auc)

    def fold_mean(r):
        return r.result.summary("g")["fold_auc_mean"]

    assert fold_mean(lost) < 0.75 < fold_mean(real)
    # a generated volume of a patient a fold model trained on is refused
    leak = {ids[int(np.flatnonzero(folds == 3)[0])]: {"ct": ct[0]}}
    leak_ref = ccv.CVResult([dataclasses.replace(res.folds[0], ids=list(leak))])
    with pytest.raises(ValueError, match="trained on"):
        generated_rows(cfg, y, leak_ref, generated=leak)


def test_a_pretrained_reader_reads_every_fold_as_it_is(clot_cv, tmp_path, monkeypatch):
    from xr2ct_lib.models.classifiers import fold_model_dir, load_classifier
    from xr2ct_lib.train import clot as tcl
    from xr2ct_lib.train.clot import score_volumes

    cfg, ct, clot, labels, folds, ids, _ = clot_cv
    reader = load_classifier(fold_model_dir(cfg, 0, "clot_classifier"))  # "pretrained"
    cfg2 = RunConfig(cfg.profile, tmp_path / "m.csv", tmp_path, seed=0, weights="trained")
    read = []
    monkeypatch.setattr(
        tcl, "score_volumes", lambda m, v: read.append(len(v)) or score_volumes(m, v)
    )
    res = ccv.cv_clot_classifier(cfg2, ct, clot, labels, folds, ids, init=reader, epochs=0)
    # folds 0 and 1 test, 1 and 2 validate: each of those patients is read once
    assert sum(read) == np.isin(folds, [0, 1, 2]).sum()
    monkeypatch.undo()
    pooled = res.pooled().set_index("patient_id")
    test = [i for i in range(N) if folds[i] in (0, 1)]
    want = score_volumes(reader, ct[test])
    np.testing.assert_allclose(pooled.loc[[ids[i] for i in test], "y_score"], want, rtol=1e-6)
    # its fold copies saw no patient of this cohort: fold 1's may read a fold-4 patient,
    # which the reader itself (fold 0's model of the first run) was trained on
    seen = int(np.flatnonzero(folds == 4)[0])
    got = ccv.predict_volumes_with_fold_models(cfg2, ct[[seen]], [1], [ids[seen]])
    np.testing.assert_allclose(got, score_volumes(reader, ct[[seen]]), rtol=1e-6)
    # fine-tuning from the reader keeps its box and changes its weights
    cfg3 = RunConfig(cfg.profile, tmp_path / "t.csv", tmp_path / "t", seed=0, weights="trained")
    tuned = ccv.cv_clot_classifier(cfg3, ct, clot, labels, folds, ids, init=reader, epochs=2)
    assert not np.allclose(tuned.pooled().y_score, res.pooled().y_score)
    assert load_classifier(fold_model_dir(cfg3, 1, "clot_classifier")).crop == reader.crop


def test_saved_fold_readers_read_coarser_volumes_resized_and_refuse_their_training_patients(
    clot_cv,
):
    from xr2ct_lib.data.preprocess import resize_volume
    from xr2ct_lib.models.classifiers import fold_model_dir, load_classifier
    from xr2ct_lib.train.clot import score_volumes

    cfg, ct, clot, labels, folds, ids, res = clot_cv
    reader = load_classifier(fold_model_dir(cfg, 1, "clot_classifier"))
    assert reader.size == ct.shape[1:]  # the size it was trained on
    coarse = np.stack([resize_volume(v, (6, 12, 12)) for v in ct])
    got = ccv.cv_saved_clot_classifier(cfg, coarse, labels, folds, ids)
    test = np.flatnonzero(folds == 1)
    fine = np.stack([resize_volume(v, ct.shape[1:]) for v in coarse[test]])
    pooled = got.pooled().set_index("patient_id")
    np.testing.assert_allclose(pooled.loc[[ids[i] for i in test], "y_score"],
                               score_volumes(reader, fine), rtol=1e-5)  # fmt: skip
    # the same volumes read at their own size score the patients as the CV did
    same = ccv.cv_saved_clot_classifier(cfg, ct, labels, folds, ids).pooled().y_score
    np.testing.assert_allclose(same, res.pooled().y_score, rtol=1e-6)
    swapped = np.where(folds == 0, 3, np.where(folds == 3, 0, folds))  # fold 0 trained on 3
    with pytest.raises(ValueError, match="trained on"):
        ccv.cv_saved_clot_classifier(cfg, ct, labels, swapped, ids, folds_to_run=(0,))


def test_gradcam_of_the_clot_reader_falls_on_the_planted_clots(clot_cv):
    from xr2ct_lib.eval import gradcam as gc
    from xr2ct_lib.models.classifiers import fold_model_dir, load_classifier

    cfg, ct, clot, labels, folds, ids, _ = clot_cv
    reader = load_classifier(fold_model_dir(cfg, 0, "clot_classifier"))
    z0, z1, y0, y1, x0, x1 = reader.crop
    for i in np.flatnonzero((folds == 0) & (labels == 1)):  # patients it never saw
        cam = gc.gradcam_clot(reader, ct[i])
        assert cam.shape == ct[i].shape and cam.max() == pytest.approx(1.0) and cam.min() >= 0
        outside = np.ones(cam.shape, bool)
        outside[z0:z1, y0:y1, x0:x1] = False
        assert not cam[outside].any()
        s = gc.localisation_score(cam, clot[i], dilate=0)
        chance = gc.random_baseline(clot[i], n=50, dilate=0)
        assert s["mass_on_clot"] > 2 * chance["mass_on_clot"]


def test_clot_box_and_slice_windows():
    from xr2ct_lib.train.clot import clot_box, slice_windows

    m = np.zeros((2, 8, 64, 64), np.uint8)
    m[1, 3:5, 30:34, 60:62] = 1
    z0, z1, y0, y1, x0, x1 = clot_box(m, margin=2)
    assert (z0, z1) == (1, 7) and (y0, y1) == (24, 40) and (x0, x1) == (48, 64)
    with pytest.raises(ValueError, match="no clot"):
        clot_box(np.zeros_like(m))
    v = torch.arange(2 * 5 * 2 * 2, dtype=torch.float32).reshape(2, 5, 2, 2)
    w = slice_windows(v, 1)
    assert w.shape == (2, 5, 3, 2, 2)
    for d in range(5):  # neighbours d-1, d, d+1, the ends repeated
        for j, e in enumerate((max(d - 1, 0), d, min(d + 1, 4))):
            assert torch.equal(w[:, d, j], v[:, e])


def test_a_pretrained_xray_reader_reads_every_fold_as_it_is(tmp_path):
    from xr2ct_lib.models.classifiers import CXRClassifier
    from xr2ct_lib.train.classifier import predict

    cfg = RunConfig(PROFILE, tmp_path / "m.csv", tmp_path, weights="trained")
    labels, folds, ids = cohort_arrays()
    cxr = np.random.default_rng(4).random((N, 3, 16, 16)).astype(np.float32)
    torch.manual_seed(0)
    reader = CXRClassifier(8, ("infarct", "oligaemia")).eval()
    before = {k: v.clone() for k, v in reader.state_dict().items()}
    res = ccv.cv_cxr_classifier(cfg, cxr, labels, folds, ids, reader=reader)
    pooled = res.pooled().set_index("patient_id")
    rows = [ids.index(p) for p in pooled.index]
    expected = predict(reader, torch.from_numpy(cxr[rows]))
    np.testing.assert_allclose(pooled["y_score"].to_numpy(), expected, rtol=1e-5)
    assert all(torch.equal(v, reader.state_dict()[k]) for k, v in before.items())  # no training
