"""The "Generated CTPA" rows of Tables 1 and 7: generated volumes read by real-CTPA models.

Chapter 5 writes ``generated/<pid>.safetensors`` (``z``: the (2, C, d, h, w) raw VAE latents
sampled from the patient's X-ray; ``ct``: the decoded volume). Each generated latent is
read by a real-CTPA classifier of the patient's test fold (trained on real CTPA of the other
folds, checked never to have seen the patient), at that fold's validation threshold: the
clot classifier reads ``ct``, the latent DenseNet reads ``z`` normalised like the real
latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from safetensors.torch import load_file

from xr2ct_lib.config import RunConfig
from xr2ct_lib.eval.classifier_cv import (
    predict_volumes_with_fold_models,
    predict_with_fold_models,
)
from xr2ct_lib.eval.crossval import CVResult, FoldResult
from xr2ct_lib.run.latents import load_normalizer


@dataclass
class GeneratedRows:
    name: str
    result: CVResult | None
    note: str
    networks: str = ""


def load_generated(cfg: RunConfig, out_dir: str = "generated") -> dict[str, dict[str, np.ndarray]]:
    """Chapter 5's volumes by patient; refuses volumes made with other networks than ``cfg``'s.

    Every volume records the key of the networks that made it (:mod:`xr2ct_lib.run.networks`);
    reading volumes of the shipped bundle in a chapter that uses the trained networks (or the
    reverse) would mix two latent spaces, so that stops with the fix named.
    """
    from safetensors import safe_open

    from xr2ct_lib.run.networks import networks_for

    d = cfg.run_dir / out_dir
    if not d.is_dir():
        return {}
    key = None
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            meta = fh.metadata() or {}
        if "networks" in meta:
            key = key or networks_for(cfg).key
            if meta["networks"] != key:
                raise ValueError(
                    f"{f} was generated with the {meta.get('weights')} networks "
                    f"({meta['networks']}), this run uses weights={cfg.weights} ({key}): "
                    "pass the same `weights` as chapter 5, or rerun chapter 5"
                )
        out[f.stem] = {k: v.numpy() for k, v in load_file(str(f)).items()}
    return out


def test_fold_volumes(cfg: RunConfig, cohort) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(ids, real, generated)`` of the main split's test fold, volumes (N, 1, D, H, W).

    Raises, naming the patients, when chapter 5 has not generated them all.
    """
    ids = cohort.split_ids(cfg.profile, "test")
    gen = load_generated(cfg)
    missing = [p for p in ids if p not in gen]
    if missing:
        raise FileNotFoundError(f"no generated volumes for {missing[:5]}: run chapter 5 first")
    real = np.stack([cohort.load(p)["ct"] for p in ids])[:, None]
    return ids, real, np.stack([gen[p]["ct"] for p in ids])[:, None]


def generated_rows(
    cfg: RunConfig,
    labels: dict[str, int],
    reference: CVResult,
    name: str = "Generated CTPA",
    reader: str = "clot_classifier",
    generated: dict[str, dict[str, np.ndarray]] | None = None,
) -> GeneratedRows:
    """Score the generated volumes with the real-CTPA classifiers of each patient's test fold.

    ``reference`` (that classifier's real-CTPA CV) gives the folds and Youden thresholds;
    ``reader`` is ``clot_classifier`` (reads the volume ``ct``) or ``latent_classifier``
    (reads the latent ``z``, normalised like the real latents of ``cfg``'s VAE, which must be
    the VAE that encoded them). ``generated`` (pid → {"ct", "z"}) defaults to chapter 5's
    cache (:func:`load_generated`).
    """
    gen = load_generated(cfg) if generated is None else generated
    if not gen:
        return GeneratedRows(name, None, "no generated volumes in "
                             f"{cfg.run_dir / 'generated'}: run chapter 5 first")  # fmt: skip
    fold_of = {pid: f.fold for f in reference.folds for pid in f.ids}
    thr = {f.fold: f.threshold for f in reference.folds}
    ids = [p for p in gen if p in fold_of]
    if not ids:
        return GeneratedRows(name, None, "generated patients are not in the evaluated test folds")
    folds = np.array([fold_of[p] for p in ids])
    if reader == "clot_classifier":
        ct = np.stack([gen[p]["ct"] for p in ids]).astype(np.float32)
        scores = predict_volumes_with_fold_models(cfg, ct, folds, ids)
    elif reader == "latent_classifier":
        z = np.stack([gen[p]["z"] for p in ids]).astype(np.float32)
        z = load_normalizer(cfg).normalize(z).astype(np.float32)
        scores = predict_with_fold_models(cfg, z, folds, ids)
    else:
        raise ValueError(f"reader must be 'clot_classifier' or 'latent_classifier', not {reader!r}")
    parts = []
    for k in np.unique(folds):
        in_k = [p for p, f in zip(ids, folds, strict=True) if f == k]
        y = np.array([labels[p] for p in in_k])
        parts.append(FoldResult(int(k), thr[k], y, scores[folds == k], in_k))
    result = CVResult(parts)
    note = (f"{len(ids)} generated volumes of test fold(s) {sorted(set(folds.tolist()))}, read by "
            f"the real-CTPA {reader.replace('_', ' ')} of each fold")  # fmt: skip
    from xr2ct_lib.run.networks import networks_for

    return GeneratedRows(name, result, note, networks_for(cfg).describe())
