"""Training the in-book compressors and caching every patient's latents.

- :func:`train_slice_vae`: the stand-in 2D VAE on axial slices of the training folds
  (L1 + a small KL term), cached in ``models/vae/``.
- :func:`train_compressor3d`: the 3D VQ-VAE of the Table 4 comparison, ``models/ae3d/``.
- :func:`encode_cohort`: the two half-volume latents of every patient, ``latents/<pid>``,
  and the dataset-wide min/max (training folds only) that maps them to [−1, 1].

A finished model is reused when its training recipe (profile, patients, steps, seed) is
unchanged.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from xr2ct_lib.checkpoint import atomic_write_text
from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.data.preprocess import merge_halves, split_halves
from xr2ct_lib.models.compressor3d import Compressor3D, load_compressor3d
from xr2ct_lib.models.vae import SliceVAE, load_vae, make_standin_vae
from xr2ct_lib.utils import progress, seed_everything


def recipe_key(**recipe) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(directory: Path, key: str) -> bool:
    f = directory / "recipe.json"
    return f.is_file() and json.loads(f.read_text()).get("key") == key


def _fit(
    loss_fn: Callable[[int, torch.Generator], dict[str, torch.Tensor]],
    params,
    steps: int,
    lr: float,
    seed: int,
    desc: str,
) -> pd.DataFrame:
    """AdamW with cosine decay; ``loss_fn(step, generator)`` returns named terms incl. ``loss``."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr * 0.05)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    bar = progress(range(steps), desc=desc, unit="step")
    for step in bar:
        terms = loss_fn(step, gen)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        rows.append({"step": step, **{k: float(v.detach()) for k, v in terms.items()}})
        if step % 10 == 0:
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}")
    return pd.DataFrame(rows)


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Left-right flip of a random half of the batch (the paper's augmentation)."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x


def train_slice_vae(
    cfg: RunConfig,
    cohort: PreparedCohort,
    train_idx,
    steps: int | None = None,
    lr: float = 2e-3,
    kl_weight: float = 1e-6,
) -> tuple[SliceVAE, pd.DataFrame]:
    """Train (or reuse) the stand-in VAE on axial slices of the ``train_idx`` patients."""
    p = cfg.profile
    steps = p.vae_steps if steps is None else steps
    out = cfg.run_dir / "models" / "vae"
    ids = [cohort.ids[i] for i in train_idx]
    key = recipe_key(kind="slice_vae", profile=p.name, ids=ids, steps=steps, lr=lr, kl=kl_weight,
                     seed=cfg.seed)  # fmt: skip
    hist_file = cfg.run_dir / "models" / "vae_history.csv"
    if _cached(out, key) and hist_file.is_file():
        return load_vae(out), pd.read_csv(hist_file)
    seed_everything(cfg.seed)
    vae = make_standin_vae(p)
    slices = torch.from_numpy(cohort.stack("ct", train_idx)).flatten(0, 1)[:, None]

    def loss_fn(step, gen):
        idx = torch.randint(len(slices), (p.vae_batch,), generator=gen)
        x = _flip(slices[idx], gen)
        post = vae.posterior(x)
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.autoencoder.decode(z).sample
        l1 = (rec - x).abs().mean()
        kl = post.kl().mean() / x[0].numel()
        return {"loss": l1 + kl_weight * kl, "l1": l1, "kl": kl}

    vae.train()
    t0 = time.perf_counter()
    history = _fit(loss_fn, list(vae.parameters()), steps, lr, cfg.seed, "2D VAE")
    history.attrs["seconds"] = time.perf_counter() - t0
    vae.eval()
    vae.save(out)
    atomic_write_text(
        out / "recipe.json", json.dumps({"key": key, "seconds": history.attrs["seconds"]})
    )
    atomic_write_text(hist_file, history.to_csv(index=False))
    return vae, history


def train_compressor3d(
    cfg: RunConfig, cohort: PreparedCohort, train_idx, steps: int | None = None, lr: float = 2e-3
) -> tuple[Compressor3D, pd.DataFrame]:
    """Train (or reuse) the 3D VQ-VAE on whole training volumes (batch 2, L1 + VQ loss)."""
    p = cfg.profile
    steps = p.ae3d_steps if steps is None else steps
    out = cfg.run_dir / "models" / "ae3d"
    ids = [cohort.ids[i] for i in train_idx]
    key = recipe_key(kind="vqvae3d", profile=p.name, ids=ids, steps=steps, lr=lr, seed=cfg.seed)
    hist_file = cfg.run_dir / "models" / "ae3d_history.csv"
    if _cached(out, key) and hist_file.is_file():
        return load_compressor3d(out), pd.read_csv(hist_file)
    seed_everything(cfg.seed)
    model = Compressor3D.for_profile(p)
    vols = torch.from_numpy(cohort.stack("ct", train_idx))[:, None]

    def loss_fn(step, gen):
        x = _flip(vols[torch.randint(len(vols), (2,), generator=gen)], gen)
        rec, q = model(x)
        l1 = (rec - x).abs().mean()
        return {"loss": l1 + q, "l1": l1, "vq": q}

    model.train()
    t0 = time.perf_counter()
    history = _fit(loss_fn, list(model.parameters()), steps, lr, cfg.seed, "3D VQ-VAE")
    model.eval()
    model.save(out)
    atomic_write_text(
        out / "recipe.json", json.dumps({"key": key, "seconds": time.perf_counter() - t0})
    )
    atomic_write_text(hist_file, history.to_csv(index=False))
    return model, history


@torch.no_grad()
def reconstruct(vae: SliceVAE, ct: np.ndarray) -> np.ndarray:
    """A (D, H, W) volume through the VAE: halves → latents → slices → re-interleaved."""
    halves = [vae.decode_volume(vae.encode_volume(h)).cpu().numpy() for h in split_halves(ct)]
    return merge_halves(*halves)


def latent_dir(cfg: RunConfig) -> Path:
    """This run's latents: of the trained or the shipped VAE (:mod:`xr2ct_lib.networks`)."""
    from xr2ct_lib.networks import latents_dir

    return latents_dir(cfg)


@torch.no_grad()
def encode_cohort(
    cfg: RunConfig, vae: SliceVAE, cohort: PreparedCohort, exclude_folds=(0, 1)
) -> dict:
    """Write ``latents/<pid>.safetensors`` (``z``: (2, C, D/2, h, w)) and the normalizer.

    The min/max of the normaliser come from patients outside ``exclude_folds`` (the test and
    validation folds of the book's main split), as the reference implementation fixes
    dataset-wide constants.
    """
    d = latent_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    lo, hi = np.inf, -np.inf
    for pid, fold in progress(
        list(zip(cohort.ids, cohort.folds, strict=True)), desc="encode", unit="patient"
    ):
        ct = cohort.load(pid)["ct"]
        z = torch.stack([vae.encode_volume(h) for h in split_halves(ct)]).float().cpu()
        tmp = d / f".{pid}.tmp"
        save_file({"z": z.contiguous()}, str(tmp))
        tmp.replace(d / f"{pid}.safetensors")
        if fold not in exclude_folds:
            lo, hi = min(lo, float(z.min())), max(hi, float(z.max()))
    norm = {"min": lo, "max": hi, "vae": vae.describe(), "excluded_folds": list(exclude_folds)}
    atomic_write_text(d / "normalizer.json", json.dumps(norm, indent=2))
    return norm


def load_latents(cfg: RunConfig, ids=None) -> tuple[list[str], np.ndarray]:
    """``(ids, z)``: ``z`` (N, 2, C, D/2, h, w) raw latents, in the cohort order by default."""
    from xr2ct_lib.networks import ensure_latents

    ensure_latents(cfg)
    if ids is None:
        ids = PreparedCohort(cfg.run_dir).ids
    d = latent_dir(cfg)
    missing = [i for i in ids if not (d / f"{i}.safetensors").is_file()]
    if missing:
        raise FileNotFoundError(f"no latents for {missing[:5]} in {d}: run notebook 02 first")
    return list(ids), np.stack([load_file(str(d / f"{i}.safetensors"))["z"].numpy() for i in ids])


def load_normalizer(cfg: RunConfig) -> dict:
    from xr2ct_lib.networks import ensure_latents

    ensure_latents(cfg)
    f = latent_dir(cfg) / "normalizer.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: run notebook 02 first")
    return json.loads(f.read_text())


def normalize_latents(z, norm: dict):
    """Raw latents → [−1, 1] with the dataset-wide min/max."""
    return 2 * (z - norm["min"]) / (norm["max"] - norm["min"]) - 1


def denormalize_latents(z, norm: dict):
    return (z + 1) / 2 * (norm["max"] - norm["min"]) + norm["min"]
