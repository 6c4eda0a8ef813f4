"""A tiny run directory, as chapters 1–3 leave it, for the generation tests (no phantoms)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from xr2ct_lib.config import PROFILES, RunConfig
from xr2ct_lib.data.cohort import PreparedCohort

PROFILE = dataclasses.replace(
    PROFILES["smoke"], ct_size=(8, 16, 16), vae_channels=(8, 8), cxr_size=32,
    cxr_embed_dim=32, unet_channels=(8, 16), train_steps=(3, 2, 3), batch_size=2,
    sample_steps_fast=3, vae_steps=3, encoder_steps=3, vae_batch=4,
    vae_steps_long=4, encoder_steps_long=4, train_steps_long=(2, 2, 3),
)  # fmt: skip


def prepared_cohort(d: Path, profile=PROFILE, n: int = 12) -> RunConfig:
    """``n`` patients of random volumes and X-rays in ``d/prepared``, and their manifest."""
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(n)]
    (d / "prepared").mkdir(parents=True)
    s = profile.cxr_size
    for pid in ids:
        arrays = {"ct": rng.uniform(-1, 1, profile.ct_size), "cxr": rng.random((3, s, s)),
                  "drr": rng.random((3, s, s)), "clot": np.zeros(profile.ct_size),
                  "lung": np.ones(profile.ct_size)}  # fmt: skip
        save_file({k: torch.tensor(v, dtype=torch.float32) for k, v in arrays.items()},
                  str(d / "prepared" / f"{pid}.safetensors"))  # fmt: skip
    index = pd.DataFrame({"patient_id": ids, "pe_label": [int(i % 3 == 0) for i in range(n)],
                          "fold": [i % 6 for i in range(n)], "source": "synthetic"})  # fmt: skip
    index.to_csv(d / "prepared" / "index.csv", index=False)
    index.to_csv(d / "manifest.csv", index=False)
    return RunConfig(profile, d / "manifest.csv", d, seed=0, weights="trained")


def chapters_1_to_3(d: Path, profile=PROFILE) -> RunConfig:
    """Prepared cohort, an untrained VAE and encoder, latents and embeddings."""
    from xr2ct_lib.models.cxr_encoder import StandinCXREncoder
    from xr2ct_lib.models.vae import make_standin_vae
    from xr2ct_lib.run.embeddings import embed_cohort
    from xr2ct_lib.run.latents import encode_cohort

    cfg = prepared_cohort(d, profile)
    cohort = PreparedCohort(d)
    torch.manual_seed(0)
    vae = make_standin_vae(profile)
    vae.save(d / "models" / "vae")
    encode_cohort(cfg, vae, cohort)
    enc = StandinCXREncoder(profile.cxr_embed_dim, width=4, in_size=profile.cxr_size).eval()
    enc.save(d / "models" / "encoder")
    embed_cohort(cfg, enc, cohort)
    return cfg
