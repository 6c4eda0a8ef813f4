"""Run-level steps of the X-ray2CTPA model that chapters 4–7 call.

- :func:`train_xray2ctpa`: the staged training (unconditional → DRR → CXR) on the cached
  latents and embeddings of the training folds, checkpointed and resumable, then a
  generation bundle (denoiser + VAE + encoder + normaliser) for ``xr2ct generate``;
- :func:`load_generator`: the denoiser of the run's ``weights`` (shipped or trained);
- :func:`generate_patients`: sample, decode and cache generated volumes for test patients;
- :func:`sample_unconditional`: latents with the condition dropped (Fig. 4).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.data.preprocess import merge_halves
from xr2ct_lib.eval.folds import fold_split
from xr2ct_lib.files import atomic_write, atomic_write_text
from xr2ct_lib.models import halves as H
from xr2ct_lib.models.bundle import write_bundle
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.models.diffusion import LatentDiffusion
from xr2ct_lib.models.latents import LatentNormalizer
from xr2ct_lib.models.vae import load_vae
from xr2ct_lib.networks import networks_for
from xr2ct_lib.train import autoencoder as ae
from xr2ct_lib.train.diffusion import LatentPairDataset, run_staged_training
from xr2ct_lib.train.encoder import load_embeddings
from xr2ct_lib.utils import progress


def build_model(cfg: RunConfig) -> LatentDiffusion:
    """The profile's denoiser (CXR embedding injected at every level) and noise schedule.

    Its input has the channels of one diffusion sample: 2C when the halves are joint.
    """
    p = cfg.profile
    torch.manual_seed(cfg.seed)
    den = LatentDenoiser3D(
        in_channels=p.diffusion_shape[0], channels=tuple(p.unet_channels),
        cond_dim=p.cxr_embed_dim, conv_kernel=p.unet_kernel,
    )  # fmt: skip
    return LatentDiffusion(
        den, num_train_timesteps=p.diffusion_steps, prediction_type=p.prediction_type
    )


def training_data(cfg: RunConfig, idx) -> LatentPairDataset:
    """The diffusion samples of the patients in ``idx``, with their embeddings and labels.

    One sample per patient (both halves, joint) or per half volume (independent), in the
    layout of ``cfg.profile.halves``.
    """
    idx = np.asarray(idx)
    halves = cfg.profile.halves
    _, z = ae.load_latents(cfg)
    norm = LatentNormalizer.from_dict(ae.load_normalizer(cfg))
    z = H.to_diffusion(torch.from_numpy(norm.normalize(z[idx]).astype(np.float32)), halves)
    cxr, drr = (H.repeat_per_sample(load_embeddings(cfg, k)[idx], halves) for k in ("cxr", "drr"))
    labels = H.repeat_per_sample(PreparedCohort(cfg.run_dir).labels[idx], halves)
    return LatentPairDataset(
        z, torch.from_numpy(cxr), torch.from_numpy(drr), torch.from_numpy(labels)
    )


def train_generator(
    cfg: RunConfig,
    train_idx,
    steps: tuple[int, int, int],
    lrs: tuple[float, float, float],
    ckpt_dir: Path,
    resume: bool = True,
    ckpt_every: int = 100,
) -> tuple[LatentDiffusion, pd.DataFrame]:
    """The three diffusion stages on the patients ``train_idx``, checkpointed in ``ckpt_dir``."""
    model = build_model(cfg)
    data = training_data(cfg, train_idx)
    history = run_staged_training(
        model, data, steps=tuple(steps), batch=cfg.profile.batch_size, ckpt_dir=ckpt_dir,
        lrs=tuple(lrs), resume=resume, seed=cfg.seed, ckpt_every=ckpt_every,
    )  # fmt: skip
    return model, history


def train_xray2ctpa(
    cfg: RunConfig, test_fold: int = 0, resume: bool = True
) -> tuple[LatentDiffusion, pd.DataFrame]:
    """The book's live run (short schedule) on the training folds of ``test_fold``.

    Always on this run's own latents and embeddings (chapters 2 and 3), whatever
    ``cfg.weights``; writes ``models/bundle``. A finished run with the same recipe is reused.
    """
    cfg = dataclasses.replace(cfg, weights="trained")
    p = cfg.profile
    cohort = PreparedCohort(cfg.run_dir)
    train_idx = fold_split(cohort.folds, test_fold, p.n_folds)["train"]
    sched = p.schedule("short")
    recipe = ae.recipe_key(kind="xray2ctpa", profile=p.name, steps=sched.diffusion, lrs=sched.lrs,
                           prediction=p.prediction_type, halves=p.halves,
                           batch=p.batch_size, ids=[cohort.ids[i] for i in train_idx],
                           seed=cfg.seed, vae=ae.load_normalizer(cfg))  # fmt: skip
    models = cfg.run_dir / "models"
    bundle, hist_file, recipe_file = (
        models / "bundle",
        models / "diffusion_history.csv",
        models / "diffusion_recipe.json",
    )
    done = (
        recipe_file.is_file()
        and json.loads(recipe_file.read_text())["key"] == recipe
        and (bundle / "denoiser" / "config.json").is_file()
        and hist_file.is_file()
    )
    if resume and done:
        return LatentDiffusion.from_pretrained(bundle / "denoiser"), pd.read_csv(hist_file)
    t0 = time.perf_counter()
    model, history = train_generator(
        cfg, train_idx, sched.diffusion, sched.lrs, models / "diffusion" / recipe, resume
    )
    seconds = time.perf_counter() - t0
    write_bundle(bundle, model, p, ae.load_normalizer(cfg), vae=models / "vae",
                 encoder=models / "encoder")  # fmt: skip
    atomic_write_text(hist_file, history.to_csv(index=False))
    atomic_write_text(recipe_file, json.dumps({"key": recipe, "seconds": seconds}))
    return LatentDiffusion.from_pretrained(bundle / "denoiser"), history


def load_generator(cfg: RunConfig) -> LatentDiffusion:
    """The denoiser of ``cfg.weights``: the shipped bundle's, or the live run's (trained or
    reused by :func:`train_xray2ctpa`)."""
    nets = networks_for(cfg)
    if nets.weights == "shipped":
        return LatentDiffusion.from_pretrained(nets.denoiser)
    return train_xray2ctpa(cfg)[0]


def patient_seed(cfg: RunConfig, index: int) -> int:
    """The noise seed of the patient at cohort position ``index`` (recorded with its volume)."""
    return cfg.seed * 100_003 + int(index)


@torch.no_grad()
def generate_patients(
    cfg: RunConfig,
    model: LatentDiffusion,
    ids: list[str],
    sampler: str | None = None,
    steps: int | None = None,
    guidance_scale: float = 1.0,
    out_dir: str = "generated",
    write: bool = True,
) -> pd.DataFrame:
    """Generate each patient's volume from its X-ray embedding with ``cfg``'s networks.

    Writes ``<out_dir>/<pid>.safetensors`` with ``ct`` (D, H, W) in [−1, 1] and ``z``
    (2, C, d, h, w) raw VAE latents (metadata: seed, sampler, steps, networks key); returns
    one row per patient with its seed and seconds. ``sampler`` and ``steps`` default to the
    profile's (DDPM: all training timesteps).
    """
    p = cfg.profile
    sampler = sampler or p.sampler
    steps = steps or (p.diffusion_steps if sampler == "ddpm" else p.sample_steps_fast)
    if model.denoiser.in_channels != p.diffusion_shape[0]:
        raise ValueError(
            f"the denoiser takes {model.denoiser.in_channels} channels, profile {p.name} "
            f"({p.halves} halves) needs {p.diffusion_shape[0]}"
        )
    nets = networks_for(cfg)
    cohort = PreparedCohort(cfg.run_dir)
    emb = load_embeddings(cfg, "cxr")
    norm = LatentNormalizer.from_dict(ae.load_normalizer(cfg))
    vae = load_vae(nets.vae)
    model.eval()
    k = H.samples_per_volume(p.halves)
    rows = []
    for pid in progress(ids, desc=f"generate ({sampler}, {steps} steps)", unit="volume"):
        i = cohort.ids.index(pid)
        seed = patient_seed(cfg, i)
        gen = torch.Generator().manual_seed(seed)
        cond = torch.from_numpy(emb[i : i + 1]).repeat(k, 1)
        t0 = time.perf_counter()
        zn = model.sample(cond, (k, *p.diffusion_shape), sampler=sampler, steps=steps,
                          guidance_scale=guidance_scale, generator=gen, progress=False)  # fmt: skip
        z = norm.denormalize(H.from_diffusion(zn.float(), p.halves, p.latent_shape[0])[0])
        ct = merge_halves(*(vae.decode_volume(z[h]).numpy() for h in range(2)))
        ct = np.clip(ct, -1, 1).astype(np.float32)
        rows.append({"patient_id": pid, "seed": seed, "sampler": sampler, "steps": steps,
                     "seconds": time.perf_counter() - t0})  # fmt: skip
        if write:
            meta = {"seed": str(seed), "sampler": sampler, "steps": str(steps),
                    "guidance_scale": str(guidance_scale), "networks": nets.key,
                    "weights": nets.weights}  # fmt: skip
            path = cfg.path(out_dir, f"{pid}.safetensors")
            tensors = {"ct": torch.from_numpy(ct), "z": z.contiguous()}
            atomic_write(path, lambda tmp, t=tensors, m=meta: save_file(t, tmp, metadata=m))
    return pd.DataFrame(rows)


@torch.no_grad()
def sample_unconditional(cfg: RunConfig, model: LatentDiffusion, n: int) -> np.ndarray:
    """``n`` normalised half-volume latents (n, C, d, h, w) sampled with the condition dropped."""
    p = cfg.profile
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    k = H.samples_per_volume(p.halves)
    n_samples = n if k == 2 else (n + 1) // 2
    x = model.sample(None, (n_samples, *p.diffusion_shape), sampler=p.sampler,
                     steps=p.sample_steps_fast, generator=gen, progress=False)  # fmt: skip
    return H.per_half(x, p.halves)[:n].numpy()
