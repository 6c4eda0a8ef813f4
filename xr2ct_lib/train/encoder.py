"""Training the stand-in CXR encoder so that its embedding carries information about the CT,
and caching every patient's embeddings (``embeddings/{cxr,drr}.safetensors``).

CLIP-style: the X-ray embedding and a projection of the same patient's CT latent are pulled
together, other patients' pushed apart (symmetric InfoNCE), on the training folds. The
DRRs (registered, clean) and the X-rays both serve as views, as the paper pre-trains on DRRs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.files import write_safetensors
from xr2ct_lib.models.cxr_encoder import OpenCLIPImageEncoder, StandinCXREncoder, load_encoder
from xr2ct_lib.train.cache import TrainCache, train_or_reuse
from xr2ct_lib.train.fit import fit
from xr2ct_lib.utils import seed_everything


class LatentProjector(nn.Module):
    """CT latent (2, C, d, h, w) → unit 512-d vector: pooled to 4³ per half, then an MLP."""

    def __init__(self, latent_channels: int, embed_dim: int = 512) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * latent_channels * 64, 512), nn.SiLU(), nn.Linear(512, embed_dim)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        pooled = F.adaptive_avg_pool3d(z.flatten(1, 2), 4).reshape(b, -1)
        return F.normalize(self.mlp(pooled), dim=-1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` matches row i of ``b``."""
    logits = a @ b.T / temperature
    target = torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness/contrast jitter and a small random shift (X-rays are not registered)."""
    b = len(x)
    gain = 1 + 0.2 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    shift = [int(s) for s in torch.randint(-3, 4, (2,), generator=gen)]
    return (torch.roll(x, shifts=shift, dims=(2, 3)) * gain + bias).clamp(0, 1)


def cxr_encoder_for(
    cfg: RunConfig, cohort: PreparedCohort, latents: np.ndarray, train_idx
) -> tuple[nn.Module, pd.DataFrame | None]:
    """``(encoder, history)``: BiomedCLIP's frozen image tower when the profile trains none
    (``encoder_steps`` 0, history None), else the stand-in trained (or reused) here."""
    if cfg.profile.encoder_steps == 0:
        return OpenCLIPImageEncoder.from_local(), None
    return train_cxr_encoder(cfg, cohort, latents, train_idx)


def train_cxr_encoder(
    cfg: RunConfig,
    cohort: PreparedCohort,
    latents: np.ndarray,
    train_idx,
    steps: int | None = None,
    lr: float | None = None,
    batch: int = 32,
) -> tuple[StandinCXREncoder, pd.DataFrame]:
    """Train (or reuse) the stand-in encoder against the patients' normalised CT latents.

    The projection head trained alongside goes to ``models/encoder_projector.safetensors``.
    """
    p = cfg.profile
    steps = p.encoder_steps if steps is None else steps
    lr = p.encoder_lr if lr is None else lr
    train_idx = np.asarray(train_idx)
    ids = [cohort.ids[i] for i in train_idx]
    cache = TrainCache.for_run(cfg, "encoder", ids, kind="cxr_encoder", steps=steps, lr=lr,
                               latents=float(np.abs(latents).mean()))  # fmt: skip

    def train():
        seed_everything(cfg.seed)
        enc = StandinCXREncoder(p.cxr_embed_dim, in_size=p.cxr_size)
        proj = LatentProjector(latents.shape[2], p.cxr_embed_dim)
        # DRRs first when the cohort has them (as the paper's stages), else the X-rays only
        keys = ("cxr", "drr") if cohort.has("drr")[train_idx].all() else ("cxr",)
        views = {k: torch.from_numpy(cohort.stack(k, train_idx)) for k in keys}
        z = torch.from_numpy(latents[train_idx]).float()
        n = min(batch, len(train_idx))

        def loss_fn(step, gen):
            idx = torch.randperm(len(z), generator=gen)[:n]
            key = "drr" if step < steps // 3 and "drr" in views else "cxr"
            x = _augment(views[key][idx], gen)
            loss = info_nce(enc(x), proj(z[idx]))
            return {"loss": loss, f"{key}_loss": loss}

        enc.train()
        params = list(enc.parameters()) + list(proj.parameters())
        history = fit(loss_fn, params, steps, lr, cfg.seed, "CXR encoder")
        enc.eval().save(cache.directory)
        write_safetensors(_projector_file(cfg), proj.state_dict())
        return enc, history

    return train_or_reuse(cache, load_encoder, train)


def _projector_file(cfg: RunConfig):
    return cfg.run_dir / "models" / "encoder_projector.safetensors"


def load_projector(cfg: RunConfig, latent_channels: int) -> LatentProjector:
    proj = LatentProjector(latent_channels, cfg.profile.cxr_embed_dim)
    proj.load_state_dict(load_file(str(_projector_file(cfg))))
    return proj.eval()
