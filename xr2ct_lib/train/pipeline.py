"""Run-level steps of the X-ray2CTPA model that chapters 4–7 call.

- :func:`train_xray2ctpa`: the staged training (unconditional → DRR → CXR) on the cached
  latents and embeddings of the training folds, checkpointed and resumable, then a
  generation bundle (denoiser + VAE + encoder + normaliser) for ``xr2ct generate``;
- :func:`generate_patients`: sample, decode and cache generated volumes for test patients;
- :func:`sample_unconditional`: latents with the condition dropped (Fig. 4).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from xr2ct_lib.checkpoint import atomic_write_text
from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.data.folds import fold_split
from xr2ct_lib.data.preprocess import merge_halves
from xr2ct_lib.generate import write_bundle
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.models.diffusion import LatentDiffusion
from xr2ct_lib.models.latents import load_latents, load_normalizer
from xr2ct_lib.models.vae import load_vae
from xr2ct_lib.train.cache import recipe_key
from xr2ct_lib.train.diffusion import LatentPairDataset, run_staged_training
from xr2ct_lib.train.encoder import load_embeddings
from xr2ct_lib.utils import progress, seeded


def build_model(cfg: RunConfig) -> LatentDiffusion:
    """The profile's denoiser (CXR embedding injected at every level) and noise schedule.

    Initialised from ``cfg.seed`` on a forked RNG: the global RNG state is left as it was.
    """
    p = cfg.profile
    with seeded(cfg.seed):
        den = LatentDenoiser3D(
            in_channels=p.latent_shape[0], channels=tuple(p.unet_channels), cond_dim=p.cxr_embed_dim
        )
    return LatentDiffusion(
        den, num_train_timesteps=p.diffusion_steps, prediction_type=p.prediction_type
    )


def training_data(cfg: RunConfig, idx) -> LatentPairDataset:
    """Each half volume of each patient in ``idx`` is a sample, with the patient's embeddings."""
    idx = np.asarray(idx)
    z = load_latents(cfg, normalized=True)[1][idx]
    cxr, drr = (np.repeat(load_embeddings(cfg, k)[idx], 2, axis=0) for k in ("cxr", "drr"))
    labels = np.repeat(PreparedCohort(cfg.run_dir).labels[idx], 2)
    return LatentPairDataset(
        torch.from_numpy(z).flatten(0, 1), torch.from_numpy(cxr), torch.from_numpy(drr),
        torch.from_numpy(labels),
    )  # fmt: skip


def train_xray2ctpa(
    cfg: RunConfig, test_fold: int = 0, resume: bool = True
) -> tuple[LatentDiffusion, pd.DataFrame]:
    """Staged training on the training folds of ``test_fold``; reuses a finished run."""
    p = cfg.profile
    cohort = PreparedCohort(cfg.run_dir)
    train_idx = fold_split(cohort.folds, test_fold, p.n_folds)["train"]
    lrs = p.stage_lrs
    recipe = recipe_key(kind="xray2ctpa", profile=p.name, steps=p.train_steps, lrs=lrs,
                        prediction=p.prediction_type,
                        batch=p.batch_size, ids=[cohort.ids[i] for i in train_idx],
                        seed=cfg.seed, vae=load_normalizer(cfg).to_dict())  # fmt: skip
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
    model = build_model(cfg)
    data = training_data(cfg, train_idx)
    t0 = time.perf_counter()
    history = run_staged_training(
        model, data, steps=tuple(p.train_steps), batch=p.batch_size,
        ckpt_dir=models / "diffusion" / recipe, lrs=lrs, resume=resume, seed=cfg.seed,
        ckpt_every=100,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    norm = load_normalizer(cfg).to_dict()
    write_bundle(bundle, model, p, {"min": norm["min"], "max": norm["max"]},
                 vae=models / "vae", encoder=models / "encoder")  # fmt: skip
    atomic_write_text(hist_file, history.to_csv(index=False))
    atomic_write_text(recipe_file, json.dumps({"key": recipe, "seconds": seconds}))
    return LatentDiffusion.from_pretrained(bundle / "denoiser"), history


@torch.no_grad()
def generate_patients(
    cfg: RunConfig,
    model: LatentDiffusion,
    ids: list[str],
    sampler: str = "ddim",
    steps: int | None = None,
    guidance_scale: float = 1.0,
    out_dir: str = "generated",
    write: bool = True,
) -> pd.DataFrame:
    """Generate each patient's volume from its X-ray embedding (both halves, same condition).

    Writes ``<out_dir>/<pid>.safetensors`` with ``ct`` (D, H, W) in [−1, 1] and ``z``
    (2, C, d, h, w) raw VAE latents; returns seconds per volume. Noise is seeded per patient.
    """
    p = cfg.profile
    steps = steps or (p.diffusion_steps if sampler == "ddpm" else p.sample_steps_fast)
    cohort = PreparedCohort(cfg.run_dir)
    emb = load_embeddings(cfg, "cxr")
    norm = load_normalizer(cfg)
    vae = load_vae(cfg.run_dir / "models" / "vae")
    model.eval()
    rows = []
    for pid in progress(ids, desc=f"generate ({sampler}, {steps} steps)", unit="volume"):
        i = cohort.ids.index(pid)
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + i)
        cond = torch.from_numpy(emb[i : i + 1]).repeat(2, 1)
        t0 = time.perf_counter()
        zn = model.sample(cond, (2, *p.latent_shape), sampler=sampler, steps=steps,
                          guidance_scale=guidance_scale, generator=gen, progress=False)  # fmt: skip
        z = norm.denormalize(zn.float())
        ct = merge_halves(*(vae.decode_volume(z[h]).numpy() for h in range(2)))
        ct = np.clip(ct, -1, 1).astype(np.float32)
        rows.append({"patient_id": pid, "sampler": sampler, "steps": steps,
                     "seconds": time.perf_counter() - t0})  # fmt: skip
        if write:
            path = cfg.path(out_dir, f"{pid}.safetensors")
            tmp = path.with_name(f".{path.name}.tmp")
            save_file({"ct": torch.from_numpy(ct), "z": z.contiguous()}, str(tmp))
            tmp.replace(path)
    return pd.DataFrame(rows)


@torch.no_grad()
def sample_unconditional(cfg: RunConfig, model: LatentDiffusion, n: int) -> np.ndarray:
    """``n`` normalised half-volume latents sampled with the condition dropped."""
    p = cfg.profile
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    return model.sample(None, (n, *p.latent_shape), sampler="ddim", steps=p.sample_steps_fast,
                        generator=gen, progress=False).numpy()  # fmt: skip
