"""The "Generated CTPA" rows of Tables 1 and 7: generated volumes read by real-CTPA models.

Chapter 5 writes ``generated/<pid>.safetensors`` (``z``: the (2, C, d, h, w) raw VAE latents
sampled from the patient's X-ray; ``ct``: the decoded volume). Each generated latent is
normalised like the real ones and scored by the latent DenseNet of the patient's test fold
(trained on real CTPA of the other folds), at that fold's validation threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from safetensors.torch import load_file

from xr2ct_lib.config import RunConfig
from xr2ct_lib.eval.crossval import CVResult, FoldResult


@dataclass
class GeneratedRows:
    name: str
    result: CVResult | None
    note: str
    networks: str = ""


def load_generated(cfg: RunConfig, out_dir: str = "generated") -> dict[str, dict[str, np.ndarray]]:
    """Chapter 5's volumes by patient; refuses volumes made with other networks than ``cfg``'s.

    Every volume records the key of the networks that made it (:mod:`xr2ct_lib.networks`);
    reading volumes of the shipped bundle in a chapter that uses the trained networks (or the
    reverse) would mix two latent spaces, so that stops with the fix named.
    """
    from safetensors import safe_open

    from xr2ct_lib.networks import networks_for

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


def generated_rows(
    cfg: RunConfig, labels: dict[str, int], reference: CVResult, name: str = "Generated CTPA"
) -> GeneratedRows:
    """Score the generated volumes; ``reference`` (the real-CTPA CV) gives folds and thresholds."""
    from xr2ct_lib.train.autoencoder import load_normalizer, normalize_latents
    from xr2ct_lib.train.classifier import predict_with_fold_models

    gen = load_generated(cfg)
    if not gen:
        return GeneratedRows(name, None, "no generated volumes in "
                             f"{cfg.run_dir / 'generated'}: run chapter 5 first")  # fmt: skip
    fold_of = {pid: f.fold for f in reference.folds for pid in f.ids}
    thr = {f.fold: f.threshold for f in reference.folds}
    ids = [p for p in gen if p in fold_of]
    if not ids:
        return GeneratedRows(name, None, "generated patients are not in the evaluated test folds")
    z = np.stack([gen[p]["z"] for p in ids]).astype(np.float32)
    z = normalize_latents(z, load_normalizer(cfg)).astype(np.float32)
    folds = np.array([fold_of[p] for p in ids])
    scores = predict_with_fold_models(cfg, z, folds)
    parts = []
    for k in np.unique(folds):
        in_k = [p for p, f in zip(ids, folds, strict=True) if f == k]
        y = np.array([labels[p] for p in in_k])
        parts.append(FoldResult(int(k), thr[k], y, scores[folds == k], in_k))
    result = CVResult(parts)
    note = (f"{len(ids)} generated volumes of test fold(s) {sorted(set(folds.tolist()))}, read by "
            "the real-CTPA latent DenseNet of each fold")  # fmt: skip
    return GeneratedRows(name, result, note, "X-ray2CTPA diffusion model trained here")
