"""Run-level steps of the X-ray2CTPA model that chapters 4–7 call.

- :func:`train_xray2ctpa`: the staged training (unconditional → DRR → CXR) on the cached
  latents and embeddings of the training folds, checkpointed and resumable, then a
  generation bundle (denoiser + VAE + encoder + normaliser) for ``xr2ct generate``;
- :func:`load_generator`: the :class:`XRay2CTPAPipeline` of the run's ``weights`` (the
  shipped bundle or the live one);
- :func:`generate_patients`: generate, and cache, patients' volumes with it (the one
  generation path of the book, seeded as ``xr2ct generate``);
- :func:`sample_unconditional`: latents with the condition dropped (Fig. 4).
"""

from __future__ import annotations

import copy
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
from xr2ct_lib.data.folds import fold_split
from xr2ct_lib.files import atomic_write, atomic_write_text
from xr2ct_lib.models import halves as H
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.models.diffusion import DiffusionLoss, noise_scheduler
from xr2ct_lib.models.embeddings import has_embeddings, load_embeddings
from xr2ct_lib.models.latents import load_latents, load_normalizer
from xr2ct_lib.models.pipeline import XRay2CTPAPipeline, noise_seed
from xr2ct_lib.models.vae import load_vae
from xr2ct_lib.networks import networks_for
from xr2ct_lib.train.diffusion import LatentPairDataset, run_staged_training
from xr2ct_lib.utils import progress, recipe_key, seeded


def build_model(cfg: RunConfig) -> DiffusionLoss:
    """The profile's denoiser (CXR embedding injected at every level) and its objective.

    Its input has the channels of one diffusion sample: 2C when the halves are joint.
    """
    p = cfg.profile
    with seeded(cfg.seed):  # a forked RNG: the global state is left as it was
        den = LatentDenoiser3D(
            in_channels=p.diffusion_shape[0], channels=tuple(p.unet_channels),
            cond_dim=p.cxr_embed_dim, conv_kernel=p.unet_kernel,
        )  # fmt: skip
    sched = noise_scheduler(p.diffusion_steps, prediction_type=p.prediction_type)
    return DiffusionLoss(den, sched)


def training_data(cfg: RunConfig, idx) -> LatentPairDataset:
    """The diffusion samples of the patients in ``idx``, with their embeddings and labels.

    One sample per patient (both halves, joint) or per half volume (independent), in the
    layout of ``cfg.profile.halves``.
    """
    idx = np.asarray(idx)
    halves = cfg.profile.halves
    z = H.to_diffusion(torch.from_numpy(load_latents(cfg, normalized=True)[1][idx]), halves)
    cxr, drr = (
        torch.from_numpy(H.repeat_per_sample(load_embeddings(cfg, k)[idx], halves))
        if k == "cxr" or has_embeddings(cfg, k)
        else None  # a cohort without DRRs: no DRR stage
        for k in ("cxr", "drr")
    )
    labels = H.repeat_per_sample(PreparedCohort(cfg.run_dir).labels[idx], halves)
    return LatentPairDataset(z, cxr, drr, torch.from_numpy(labels))


def trained_pipeline(cfg: RunConfig, objective: DiffusionLoss, ema_state: dict):
    """The pipeline of a training run: its EMA denoiser with the run's VAE, encoder, normaliser."""
    from xr2ct_lib.models.cxr_encoder import load_encoder

    nets = networks_for(cfg, "trained")
    denoiser = copy.deepcopy(objective.denoiser)
    denoiser.load_state_dict(ema_state)
    norm = load_normalizer(cfg)
    vae, encoder = load_vae(nets.vae), load_encoder(nets.encoder)
    return XRay2CTPAPipeline(denoiser, objective.scheduler, cfg.profile, norm, vae, encoder)


def train_generator(
    cfg: RunConfig,
    train_idx,
    steps: tuple[int, int, int],
    lrs: tuple[float, float, float],
    ckpt_dir: Path,
    resume: bool = True,
    ckpt_every: int = 100,
    accelerator=None,
    pretrain_data: LatentPairDataset | None = None,
    loss_cfg=None,
    init_state: dict | None = None,
) -> tuple[XRay2CTPAPipeline, pd.DataFrame]:
    """The three diffusion stages on the patients ``train_idx``, checkpointed in ``ckpt_dir``.

    Returns the pipeline with the last stage's EMA denoiser, and the loss history.
    ``accelerator`` (default: :func:`~xr2ct_lib.train.diffusion.default_accelerator`)
    spreads the batches over the processes of ``accelerate launch``. ``pretrain_data`` (the
    CTPA collection, :func:`~xr2ct_lib.train.collection.collection_data`) replaces the cohort
    in the unconditional and DRR stages; ``loss_cfg`` is a dict stage → loss terms
    (:func:`~xr2ct_lib.train.diffusion.run_staged_training`); ``init_state`` is a denoiser
    state dict to start from.
    """
    objective = build_model(cfg)
    if init_state is not None:
        objective.denoiser.load_state_dict(init_state)
    data = training_data(cfg, train_idx)
    if pretrain_data is not None:
        data = {"uncond": pretrain_data, "drr": pretrain_data, "cxr": data}
    res = run_staged_training(
        objective, data, steps=tuple(steps), batch=cfg.profile.batch_size, ckpt_dir=ckpt_dir,
        lrs=tuple(lrs), resume=resume, seed=cfg.seed, ckpt_every=ckpt_every,
        accelerator=accelerator, loss_cfg=loss_cfg,
    )  # fmt: skip
    return trained_pipeline(cfg, objective, res.ema_state), res.history


def train_xray2ctpa(
    cfg: RunConfig, test_fold: int | None = None, resume: bool = True
) -> tuple[XRay2CTPAPipeline, pd.DataFrame]:
    """The book's live run (short schedule) on the training folds of ``test_fold``.

    Always on this run's own latents and embeddings (chapters 2 and 3), whatever
    ``cfg.weights``; writes the bundle ``models/bundle`` (with its provenance) and returns
    the pipeline loaded from it. A finished run with the same recipe is reused.
    """
    from xr2ct_lib.train.bundle import training_provenance

    cfg = dataclasses.replace(cfg, weights="trained")
    p = cfg.profile
    test_fold = p.test_fold if test_fold is None else test_fold
    cohort = PreparedCohort(cfg.run_dir)
    train_idx = fold_split(cohort.folds, test_fold, p.n_folds)["train"]
    sched = p.schedule("short")
    recipe = recipe_key(kind="xray2ctpa", profile=p.name, steps=sched.diffusion, lrs=sched.lrs,
                           prediction=p.prediction_type, halves=p.halves,
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
        and (bundle / "provenance.json").is_file()
        and hist_file.is_file()
    )
    if resume and done:
        return XRay2CTPAPipeline.from_pretrained(bundle, p), pd.read_csv(hist_file)
    t0 = time.perf_counter()
    pipe, history = train_generator(
        cfg, train_idx, sched.diffusion, sched.lrs, models / "diffusion" / recipe, resume
    )
    seconds = time.perf_counter() - t0
    prov = training_provenance(cfg, cohort, train_idx, sched, history,
                               command=f"train_xray2ctpa(test_fold={test_fold}) (chapter 4)",
                               seconds=seconds)  # fmt: skip
    pipe.save_pretrained(bundle, provenance=prov)
    atomic_write_text(hist_file, history.to_csv(index=False))
    atomic_write_text(recipe_file, json.dumps({"key": recipe, "seconds": seconds}))
    return XRay2CTPAPipeline.from_pretrained(bundle, p), history


def load_generator(cfg: RunConfig) -> XRay2CTPAPipeline:
    """The pipeline of ``cfg.weights``: the shipped bundle (provenance checked), or the live
    run's (trained, or reused, by :func:`train_xray2ctpa`)."""
    nets = networks_for(cfg)
    if nets.weights == "shipped":
        return XRay2CTPAPipeline.from_pretrained(nets.bundle, cfg.profile)
    return train_xray2ctpa(cfg)[0]


def patient_seed(cfg: RunConfig, index: int) -> int:
    """The noise seed of the patient at cohort position ``index`` (recorded with its volume)."""
    return noise_seed(cfg.seed, index)


def generation_key(pipe: XRay2CTPAPipeline, sampler: str, steps: int, guidance: float,
                   seed: int) -> str:  # fmt: skip
    """What a generated volume depends on: the bundle's weights, sampler, steps, guidance, seed."""
    return recipe_key(bundle=pipe.key, sampler=sampler, steps=steps, guidance=guidance,
                         seed=seed)  # fmt: skip


def _stored_metadata(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception:
        return {}


def _resolve(p, sampler: str | None, steps: int | None) -> tuple[str, int]:
    sampler = sampler or p.sampler
    return sampler, steps or (p.diffusion_steps if sampler == "ddpm" else p.sample_steps_fast)


@torch.no_grad()
def generate_patients(
    cfg: RunConfig,
    pipe: XRay2CTPAPipeline,
    ids: list[str],
    sampler: str | None = None,
    steps: int | None = None,
    guidance_scale: float = 1.0,
    out_dir: str = "generated",
    reuse: bool = True,
) -> pd.DataFrame:
    """Generate each patient's volume from its X-ray with ``pipe``, one patient per call: the
    book's way to generate a cohort's volumes (chapters 4, 5, 6 and the sampler benchmark).

    One call per patient, seeded with :func:`patient_seed`, exactly as ``xr2ct generate
    --seed`` does: the same bundle, X-ray and seed give the same volume bit for bit. Writes
    ``<run_dir>/<out_dir>/<pid>.safetensors`` with ``ct`` (D, H, W) in [−1, 1] and ``z`` (2,
    C, d, h, w) raw VAE latents; its metadata holds the seed, sampler, steps, guidance and the
    bundle's key; :func:`xr2ct_lib.eval.generated.load_generated` reads them back. With
    ``reuse``, a volume already there with the same key is kept. Returns one row per patient:
    seed, sampler, steps, seconds (when reused, the seconds it took when it was made, from its
    metadata; NaN if not recorded), reused.
    """
    sampler, steps = _resolve(cfg.profile, sampler, steps)
    cohort = PreparedCohort(cfg.run_dir)
    rows = []
    for pid in progress(ids, desc=f"generate ({sampler}, {steps} steps)", unit="volume"):
        seed = patient_seed(cfg, cohort.ids.index(pid))
        key = generation_key(pipe, sampler, steps, guidance_scale, seed)
        path = cfg.run_dir / out_dir / f"{pid}.safetensors"
        row = {"patient_id": pid, "seed": seed, "sampler": sampler, "steps": steps}
        stored = _stored_metadata(path) if reuse and path.is_file() else {}
        if stored.get("key") == key:
            rows.append({**row, "seconds": float(stored.get("seconds", "nan")), "reused": True})
            continue
        cxr = torch.from_numpy(cohort.load(pid)["cxr"][None])
        out = pipe(cxr, num_inference_steps=steps, guidance_scale=guidance_scale,
                   generator=torch.Generator().manual_seed(seed), sampler=sampler)  # fmt: skip
        rows.append({**row, "seconds": out.seconds, "reused": False})
        meta = {"key": key, "seed": str(seed), "sampler": sampler, "steps": str(steps),
                "guidance_scale": str(guidance_scale), "networks": pipe.key,
                "weights": cfg.weights, "seconds": repr(float(out.seconds))}  # fmt: skip
        tensors = {"ct": torch.from_numpy(out.volumes[0]), "z": out.latents[0].contiguous()}
        atomic_write(path, lambda tmp, t=tensors, m=meta: save_file(t, tmp, metadata=m))
    return pd.DataFrame(rows)


@torch.no_grad()
def sample_unconditional(cfg: RunConfig, pipe: XRay2CTPAPipeline, n: int) -> np.ndarray:
    """``n`` normalised half-volume latents (n, C, d, h, w) sampled with the condition dropped."""
    p = cfg.profile
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    k = H.samples_per_volume(p.halves)
    n_samples = n if k == 2 else (n + 1) // 2
    x = pipe.denoise(None, n_samples, generator=gen)
    return H.per_half(x, p.halves)[:n].numpy()
