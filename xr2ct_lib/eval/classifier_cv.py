"""The PE classifiers of Tables 1 and 7 through six-fold cross-validation.

Each function trains one model per test fold (:mod:`xr2ct_lib.train.classifier`) and scores
its validation and test patients (:func:`xr2ct_lib.eval.crossval.run_cv`). The latent
DenseNet and the clot classifier of each fold are saved with the ids they were trained on,
so that generated CTPA of a test patient is read by a model that never saw the patient
(:func:`predict_with_fold_models`, :func:`predict_volumes_with_fold_models`), which is
checked.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from xr2ct_lib.config import RunConfig
from xr2ct_lib.eval.crossval import CVResult, run_cv
from xr2ct_lib.models.classifiers import fold_model_dir, load_classifier, save_classifier
from xr2ct_lib.train import classifier as tc
from xr2ct_lib.train import clot as tcl


def _fold_of(folds, split) -> int:
    return int(np.asarray(folds)[split["test"][0]])


def _scores_once(ct: np.ndarray):
    """``score(model, idx)``: :func:`~xr2ct_lib.train.clot.score_volumes` of ``ct[idx]``,
    reading each volume once per distinct set of weights (the folds of a pretrained reader
    read as it is share theirs, and each patient is then read once, not once per role)."""
    from xr2ct_lib.checkpoint import state_sha256

    done: dict[tuple[str, str, int], float] = {}

    def score(model: nn.Module, idx) -> np.ndarray:
        key = (json.dumps(model.hparams, sort_keys=True), state_sha256(model.state_dict()))
        todo = [int(i) for i in idx if (*key, int(i)) not in done]
        if todo:
            done.update(zip([(*key, i) for i in todo], tcl.score_volumes(model, ct[todo]),
                            strict=True))  # fmt: skip
        return np.array([done[(*key, int(i))] for i in idx], dtype=np.float64)

    return score


def cv_clot_classifier(
    cfg: RunConfig, ct: np.ndarray, clot: np.ndarray, labels, folds, ids, folds_to_run=None,
    epochs: int | None = None, init=None,
) -> CVResult:  # fmt: skip
    """CV of the clot-supervised CTPA classifier on volumes (N, D, H, W); saves each fold's model.

    Per test fold a :class:`~xr2ct_lib.models.classifiers.ClotSegmenter` (a copy of the
    pretrained reader ``init`` when given, :mod:`xr2ct_lib.train.readers.clot`) learns the
    clot masks of the four training folds only (validation and test masks are never read),
    and scores patients by :func:`~xr2ct_lib.train.clot.score_volumes`. With ``init`` and
    ``epochs=0`` every fold reads with the pretrained reader as it is, which saw no patient of
    the cohort.
    """
    epochs = cfg.profile.clot_epochs if epochs is None else epochs
    score = _scores_once(ct)

    def fit_predict(split):
        k = _fold_of(folds, split)
        if init is not None and epochs == 0:  # the pretrained reader as it is
            model, seen = init, []
        else:
            model = tcl.fit_clot_segmenter(cfg.profile, ct, clot, split["train"], epochs,
                                           cfg.seed + k, f"clot classifier fold {k}",
                                           init=init)  # fmt: skip
            seen = [ids[i] for i in split["train"]]
        save_classifier(model, fold_model_dir(cfg, k, "clot_classifier"), test_fold=k,
                        train_ids=seen)  # fmt: skip
        return {part: score(model, split[part]) for part in ("val", "test")}

    return _run(cfg, fit_predict, labels, folds, ids, folds_to_run)


def cv_saved_clot_classifier(
    cfg: RunConfig, ct: np.ndarray, labels, folds, ids, folds_to_run=None
) -> CVResult:
    """The CV of the clot classifiers :func:`cv_clot_classifier` saved, reading other volumes
    of the same patients (e.g. the real CT at the generator's size, which a reader of finer
    CTs reads resized: Table 7); raises if a fold's model was trained on a patient it reads."""
    score = _scores_once(ct)

    def fit_predict(split):
        k = _fold_of(folds, split)
        read = [ids[i] for i in np.concatenate([split["val"], split["test"]])]
        model = _fold_model(cfg, k, "clot_classifier", read)
        return {part: score(model, split[part]) for part in ("val", "test")}

    return _run(cfg, fit_predict, labels, folds, ids, folds_to_run)


def _fold_model(cfg: RunConfig, k: int, kind: str, ids) -> nn.Module:
    """Test fold ``k``'s saved model of ``kind``; raises if it was trained on any of ``ids``."""
    d = fold_model_dir(cfg, k, kind)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"no {kind} for test fold {k} in {d}: run notebook 08")
    seen = set(json.loads((d / "config.json").read_text()).get("train_ids", []))
    leak = sorted(seen & {str(i) for i in ids})
    if leak:
        raise ValueError(f"{d} was trained on {leak[:5]}: it cannot read these patients")
    return load_classifier(d)


def predict_volumes_with_fold_models(cfg: RunConfig, ct: np.ndarray, test_folds, ids) -> np.ndarray:
    """Score volumes (N, D, H, W) of patients ``ids`` with the clot classifier of each one's
    test fold, trained on real CTPA of the other folds; raises if that model saw the patient."""
    return _score_by_fold(cfg, "clot_classifier", tcl.score_volumes, ct, test_folds, ids)


def _score_by_fold(cfg: RunConfig, kind: str, score, x: np.ndarray, test_folds, ids):
    """``score(model, x[m])`` with the ``kind`` model of each patient's test fold."""
    test_folds = np.asarray(test_folds).astype(int)
    ids = np.asarray([str(i) for i in ids])
    out = np.full(len(x), np.nan)
    for k in np.unique(test_folds):
        m = test_folds == k
        out[m] = score(_fold_model(cfg, k, kind, ids[m]), x[m])
    return out


def cv_latent_classifier(
    cfg: RunConfig, z: np.ndarray, labels, folds, ids, folds_to_run=None, epochs: int | None = None,
    init=None,
) -> CVResult:  # fmt: skip
    """CV of the latent DenseNet on normalised latents (N, 2, C, d, h, w); saves each fold's model.

    ``folds_to_run`` defaults to the profile's ``cv_folds``. With ``init`` (the classifier
    pretrained on the CTPA collection, :mod:`xr2ct_lib.train.readers.latent`) each fold
    fine-tunes a copy of it on its training folds, as the paper fine-tunes its RSPECT-pretrained
    classifier; without, each fold trains one from scratch.
    """
    epochs = cfg.profile.classifier_epochs if epochs is None else epochs

    def fit_predict(split):
        k = _fold_of(folds, split)
        model = tc.fit_latent_classifier(cfg.profile, z, labels, split, epochs, cfg.seed + k,
                                         f"latent DenseNet fold {k}", init=init)  # fmt: skip
        save_classifier(model, fold_model_dir(cfg, k), test_fold=k,
                        train_ids=[ids[i] for i in split["train"]])  # fmt: skip
        return {
            "val": tc.score_latents(model, z[split["val"]]),
            "test": tc.score_latents(model, z[split["test"]]),
        }

    return _run(cfg, fit_predict, labels, folds, ids, folds_to_run)


def fold_models(cfg: RunConfig, kind: str = "latent_classifier") -> dict[int, nn.Module]:
    """The classifiers of ``kind`` that the CV saved, by test fold."""
    return {
        k: load_classifier(fold_model_dir(cfg, k, kind))
        for k in range(cfg.profile.n_folds)
        if (fold_model_dir(cfg, k, kind) / "config.json").is_file()
    }


def predict_with_fold_models(cfg: RunConfig, z: np.ndarray, test_folds, ids) -> np.ndarray:
    """Score latents (N, 2, C, d, h, w) of patients ``ids`` with the latent classifier of each
    one's test fold; raises if that model saw the patient.

    The latents must come from the VAE whose latents the classifiers were trained on (the
    ``weights`` of ``cfg``).
    """
    return _score_by_fold(cfg, "latent_classifier", tc.score_latents, z, test_folds, ids)


def cv_cxr_classifier(
    cfg: RunConfig,
    images: np.ndarray,
    labels,
    folds,
    ids,
    folds_to_run=None,
    epochs: int | None = None,
    reader: nn.Module | None = None,
) -> CVResult:
    """CV of a CNN on X-rays (N, 3, S, S): trained from scratch per fold, or, given the
    pretrained X-ray ``reader`` (:mod:`xr2ct_lib.train.readers.cxr`, which saw no patient of
    the cohort), its PE output read as it is in every fold (the fold's validation patients
    only set the threshold)."""
    x = torch.from_numpy(images).float()
    epochs = cfg.profile.classifier_epochs if epochs is None else epochs

    def fit_predict(split):
        if reader is not None:
            model = reader
        else:
            k = _fold_of(folds, split)
            model = tc.fit_cxr_classifier(cfg.profile, x, labels, split, epochs, cfg.seed + k,
                                          f"CXR CNN fold {k}")  # fmt: skip
        return {part: tc.predict(model, x[split[part]]) for part in ("val", "test")}

    return _run(cfg, fit_predict, labels, folds, ids, folds_to_run)


def cv_slice_lstm(
    cfg: RunConfig,
    ct: np.ndarray,
    clot: np.ndarray,
    labels,
    folds,
    ids,
    n_slices: dict[str, int | None],
    folds_to_run=None,
    epochs: int | None = None,
    slices_per_epoch: int = 1024,
) -> dict[str, CVResult]:
    """INSPECT-style CV: per fold one slice encoder (slice labels from the clot masks), frozen;
    then one LSTM per entry of ``n_slices`` (name → number of slices, None = all)."""
    epochs = cfg.profile.classifier_epochs if epochs is None else epochs
    vol = torch.from_numpy(ct).float()
    sl = tc.slice_labels(clot)
    cache: dict[int, torch.Tensor] = {}

    def features_for_fold(split) -> torch.Tensor:
        k = _fold_of(folds, split)
        if k not in cache:
            enc = tc.fit_slice_encoder(cfg.profile, vol, sl, split, epochs, cfg.seed + k,
                                       f"slice CNN fold {k}", slices_per_epoch)  # fmt: skip
            cache[k] = tc.slice_features(enc, vol)
        return cache[k]

    results = {}
    for name, n in n_slices.items():
        idx = tc.subsample_slices(vol.shape[1], n)

        def fit_predict(split, idx=idx, name=name):
            k = _fold_of(folds, split)
            feats = features_for_fold(split)[:, idx]
            model = tc.fit_slice_lstm(cfg.profile, feats, labels, split, epochs, cfg.seed + k,
                                      f"LSTM ({name}) fold {k}")  # fmt: skip
            return {
                "val": tc.predict(model, feats[split["val"]]),
                "test": tc.predict(model, feats[split["test"]]),
            }

        results[name] = _run(cfg, fit_predict, labels, folds, ids, folds_to_run)
    return results


def _run(cfg: RunConfig, fit_predict, labels, folds, ids, folds_to_run) -> CVResult:
    todo = cfg.profile.cv_test_folds if folds_to_run is None else folds_to_run
    return run_cv(fit_predict, labels, folds, ids, cfg.profile.n_folds, todo)
