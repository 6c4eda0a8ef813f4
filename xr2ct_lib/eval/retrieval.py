"""Does the X-ray embedding know the CT? CXR→CT retrieval against chance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xr2ct_lib.config import RunConfig
from xr2ct_lib.train.encoder import load_projector


def retrieval_accuracy(emb_query, emb_target, ks=(1, 5)) -> dict[str, float]:
    """CXR→CT retrieval: how often patient i's own CT ranks in the top k, and chance (k/N)."""
    q = F.normalize(torch.as_tensor(emb_query, dtype=torch.float32), dim=-1)
    t = F.normalize(torch.as_tensor(emb_target, dtype=torch.float32), dim=-1)
    if q.shape != t.shape:
        raise ValueError(f"query {tuple(q.shape)} and target {tuple(t.shape)} must match")
    sim = q @ t.T
    rank = (sim > sim.diag()[:, None]).sum(1)  # 0 = own CT is the best match
    n = len(q)
    out = {}
    for k in ks:
        out[f"top{k}"] = float((rank < k).float().mean())
        out[f"chance_top{k}"] = min(k, n) / n
    return out


@torch.no_grad()
def retrieval_table(
    cfg: RunConfig, embeddings: dict[str, np.ndarray], latents: np.ndarray, split: dict
) -> pd.DataFrame:
    """Top-1/top-5 retrieval of each query (``cxr``, ``drr``) on the test and training folds.

    The CT side is the patient's normalised latent (N, 2, C, d, h, w) through the projection
    head trained with the stand-in encoder (``models/encoder_projector.safetensors``).
    """
    proj = load_projector(cfg, latents.shape[2])
    ct_emb = proj(torch.from_numpy(latents)).numpy()
    rows = []
    for key in ("cxr", "drr"):
        for name, idx in [("test fold", split["test"]), ("training folds", split["train"])]:
            r = retrieval_accuracy(embeddings[key][idx], ct_emb[idx])
            rows.append({"query": key.upper(), "patients": name, "N": len(idx), **r})
    return pd.DataFrame(rows).set_index(["query", "patients"])
