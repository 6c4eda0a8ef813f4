"""Training the stand-in CXR encoder so that its embedding carries information about the CT.

CLIP-style: the X-ray embedding and a projection of the same patient's CT latent are pulled
together, other patients' pushed apart (symmetric InfoNCE), on the training folds. The
DRRs (registered, clean) and the X-rays both serve as views, as the paper pre-trains on DRRs.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from xr2ct_lib.checkpoint import atomic_write_text
from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.models.cxr_encoder import StandinCXREncoder, load_encoder
from xr2ct_lib.networks import embeddings_dir
from xr2ct_lib.train.autoencoder import _cached, _fit, recipe_key
from xr2ct_lib.utils import progress, seed_everything


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


def train_cxr_encoder(
    cfg: RunConfig,
    cohort: PreparedCohort,
    latents: np.ndarray,
    train_idx,
    steps: int | None = None,
    lr: float = 1e-3,
    batch: int = 32,
) -> tuple[StandinCXREncoder, pd.DataFrame]:
    """Train (or reuse) the stand-in encoder against the patients' normalised CT latents."""
    p = cfg.profile
    steps = p.encoder_steps if steps is None else steps
    out = cfg.run_dir / "models" / "encoder"
    train_idx = np.asarray(train_idx)
    ids = [cohort.ids[i] for i in train_idx]
    key = recipe_key(kind="cxr_encoder", profile=p.name, ids=ids, steps=steps, lr=lr, seed=cfg.seed,
                     latents=float(np.abs(latents).mean()))  # fmt: skip
    hist_file = cfg.run_dir / "models" / "encoder_history.csv"
    if _cached(out, key) and hist_file.is_file():
        return load_encoder(out), pd.read_csv(hist_file)
    seed_everything(cfg.seed)
    enc = StandinCXREncoder(p.cxr_embed_dim, in_size=p.cxr_size)
    proj = LatentProjector(latents.shape[2], p.cxr_embed_dim)
    views = {k: torch.from_numpy(cohort.stack(k, train_idx)) for k in ("cxr", "drr")}
    z = torch.from_numpy(latents[train_idx]).float()
    batch = min(batch, len(train_idx))

    def loss_fn(step, gen):
        idx = torch.randperm(len(z), generator=gen)[:batch]
        key = "drr" if step < steps // 3 else "cxr"  # DRRs first, as the paper's stages
        x = _augment(views[key][idx], gen)
        loss = info_nce(enc(x), proj(z[idx]))
        return {"loss": loss, f"{key}_loss": loss}

    enc.train()
    t0 = time.perf_counter()
    params = list(enc.parameters()) + list(proj.parameters())
    history = _fit(loss_fn, params, steps, lr, cfg.seed, "CXR encoder")
    enc.eval()
    enc.save(out)
    save_file(proj.state_dict(), str(cfg.path("models", "encoder_projector.safetensors")))
    atomic_write_text(
        out / "recipe.json", json.dumps({"key": key, "seconds": time.perf_counter() - t0})
    )
    atomic_write_text(hist_file, history.to_csv(index=False))
    return enc, history


def load_projector(cfg: RunConfig, latent_channels: int) -> LatentProjector:
    proj = LatentProjector(latent_channels, cfg.profile.cxr_embed_dim)
    proj.load_state_dict(load_file(str(cfg.run_dir / "models" / "encoder_projector.safetensors")))
    return proj.eval()


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
def embed_cohort(cfg: RunConfig, encoder, cohort: PreparedCohort) -> dict[str, np.ndarray]:
    """Write ``embeddings/{cxr,drr}.safetensors`` (``emb`` (N, 512), cohort order)."""
    out = {}
    for key in ("cxr", "drr"):
        embs = []
        for i in progress(range(0, len(cohort), 32), desc=f"embed {key}", leave=False):
            x = torch.from_numpy(cohort.stack(key, range(i, min(i + 32, len(cohort)))))
            embs.append(encoder.embed(x).float())
        emb = torch.cat(embs).contiguous()
        path = embeddings_dir(cfg) / f"{key}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({"emb": emb}, str(tmp))
        tmp.replace(path)
        out[key] = emb.numpy()
    atomic_write_text(embeddings_dir(cfg) / "ids.json", json.dumps(cohort.ids))
    return out


def load_embeddings(cfg: RunConfig, key: str = "cxr") -> np.ndarray:
    """This run's embeddings: of the trained or the shipped encoder (:mod:`xr2ct_lib.networks`)."""
    from xr2ct_lib.networks import ensure_latents

    ensure_latents(cfg)
    f = embeddings_dir(cfg) / f"{key}.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: run notebook 03 first")
    return load_file(str(f))["emb"].numpy()
