"""The cohort's cached X-ray and DRR embeddings (the diffusion model's condition).

:func:`embed_cohort` writes ``embeddings/{cxr,drr}.safetensors`` (one 512-d row per patient,
cohort order) with a run's CXR encoder; :func:`load_embeddings` reads them. With
``weights="shipped"`` they are the shipped bundle's encoder's, under ``shipped/embeddings``
(written by :func:`xr2ct_lib.run.encode.encode_missing`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.files import atomic_write_text, write_safetensors
from xr2ct_lib.utils import progress


def embeddings_dir(cfg: RunConfig) -> Path:
    """This run's cached X-ray/DRR embeddings: of chapter 3's encoder (``weights="trained"``)
    or of the shipped bundle's (``"shipped"``)."""
    return cfg.run_dir.joinpath(
        *(("shipped", "embeddings") if cfg.weights == "shipped" else ("embeddings",))
    )


@torch.no_grad()
def embed_cohort(cfg: RunConfig, encoder, cohort: PreparedCohort) -> dict[str, np.ndarray]:
    """Write ``embeddings/{cxr,drr}.safetensors`` (``emb`` (N, 512), cohort order).

    ``drr`` only when every patient has a DRR (a real cohort may have none).
    """
    out = {}
    keys = ("cxr", "drr") if cohort.has("drr").all() else ("cxr",)
    if "drr" not in keys:  # never a stale one from an earlier cohort
        (embeddings_dir(cfg) / "drr.safetensors").unlink(missing_ok=True)
    for key in keys:
        embs = []
        for i in progress(range(0, len(cohort), 32), desc=f"embed {key}", leave=False):
            x = torch.from_numpy(cohort.stack(key, range(i, min(i + 32, len(cohort)))))
            embs.append(encoder.embed(x).float())
        emb = torch.cat(embs)
        write_safetensors(embeddings_dir(cfg) / f"{key}.safetensors", {"emb": emb})
        out[key] = emb.numpy()
    atomic_write_text(embeddings_dir(cfg) / "ids.json", json.dumps(cohort.ids))
    return out


def has_embeddings(cfg: RunConfig, key: str) -> bool:
    """Whether this run has ``key`` embeddings (``drr``: only when the cohort has DRRs)."""
    return (embeddings_dir(cfg) / f"{key}.safetensors").is_file()


def load_embeddings(cfg: RunConfig, key: str = "cxr") -> np.ndarray:
    """This run's embeddings: of the trained or the shipped encoder
    (:mod:`xr2ct_lib.run.networks`)."""
    f = embeddings_dir(cfg) / f"{key}.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: run notebook 03 first")
    return load_file(str(f))["emb"].numpy()
