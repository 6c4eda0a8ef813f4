"""Training the X-ray2CTPA generator: the denoiser, its data and the book's live run.

- :func:`build_model`: the profile's denoiser and its diffusion objective;
- :func:`training_data`: the cached latents and embeddings of a run's patients;
- :func:`train_generator`: the staged training (unconditional → DRR → CXR), checkpointed and
  resumable; it returns the :class:`TrainedGenerator` (the EMA denoiser with the run's VAE,
  encoder and normaliser) that :meth:`TrainedGenerator.save` writes as a bundle;
- :func:`train_xray2ctpa`: chapter 4's live run, written to ``models/bundle``.

Loading a bundle and generating with it is :mod:`xr2ct_lib.generation`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xr2ct_lib.config import Profile, RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.data.folds import fold_split
from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.models import bundle as B
from xr2ct_lib.models import halves as H
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.models.diffusion import DiffusionLoss, noise_scheduler
from xr2ct_lib.models.normalizer import LatentNormalizer
from xr2ct_lib.models.vae import load_vae
from xr2ct_lib.run.embeddings import has_embeddings, load_embeddings
from xr2ct_lib.run.latents import load_latents, load_normalizer
from xr2ct_lib.run.networks import networks_for
from xr2ct_lib.train.diffusion import LatentPairDataset, run_staged_training
from xr2ct_lib.utils import recipe_key, seeded


def build_model(cfg: RunConfig, like: LatentDenoiser3D | None = None) -> DiffusionLoss:
    """The profile's denoiser (CXR embedding injected at every level) and its objective.

    Its input has the channels of one diffusion sample: 2C when the halves are joint.
    ``like``: a denoiser whose configuration to use instead (fine-tuning a bundle's).
    """
    p = cfg.profile
    with seeded(cfg.seed):  # a forked RNG: the global state is left as it was
        if like is not None:
            den = LatentDenoiser3D.from_config(like.config_dict())
        else:
            den = LatentDenoiser3D(
                in_channels=p.diffusion_shape[0], channels=tuple(p.unet_channels),
                cond_dim=p.cxr_embed_dim, conv_kernel=p.unet_kernel,
                cond_embed_type=p.cond_embed_type,
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


@dataclass
class TrainedGenerator:
    """The networks a training run ends with, as a bundle holds them.

    ``denoiser``: the EMA denoiser; ``scheduler``: its noise schedule; ``profile``: the run's;
    ``normalizer``, ``vae``, ``encoder``: the run's latent normaliser, VAE and CXR encoder.
    """

    denoiser: LatentDenoiser3D
    scheduler: object
    profile: Profile
    normalizer: LatentNormalizer
    vae: object
    encoder: object

    def save(self, directory: str | Path, dtype: torch.dtype | None = None,
             provenance: dict | None = None, loss_curve=None) -> Path:  # fmt: skip
        """Write the generation bundle (:func:`~xr2ct_lib.models.bundle.write_bundle`)."""
        return B.write_bundle(directory, self.denoiser, self.scheduler, self.profile,
                              self.normalizer, self.vae, self.encoder, dtype=dtype,
                              provenance=provenance, loss_curve=loss_curve)  # fmt: skip


def trained_generator(
    cfg: RunConfig, objective: DiffusionLoss, ema_state: dict
) -> TrainedGenerator:
    """A training run's networks: its EMA denoiser with the run's VAE, encoder, normaliser."""
    from xr2ct_lib.models.cxr_encoder import load_encoder

    nets = networks_for(cfg, "trained")
    denoiser = copy.deepcopy(objective.denoiser)
    denoiser.load_state_dict(ema_state)
    return TrainedGenerator(denoiser.eval(), objective.scheduler, cfg.profile, load_normalizer(cfg),
                            load_vae(nets.vae), load_encoder(nets.encoder))  # fmt: skip


def condition_embeddings(data: LatentPairDataset | dict[str, LatentPairDataset]) -> torch.Tensor:
    """Every condition the conditional stages train on (DRR and X-ray embeddings), stacked:
    what a projection denoiser standardises its conditions with."""
    sets = data.values() if isinstance(data, dict) else [data]
    parts = {id(a): a for d in sets for a in (d.drr, d.cxr) if a is not None}
    if not parts:
        raise ValueError("no DRR or X-ray embeddings to standardise the condition with")
    return torch.cat(list(parts.values()))


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
) -> tuple[TrainedGenerator, pd.DataFrame]:
    """The three diffusion stages on the patients ``train_idx``, checkpointed in ``ckpt_dir``.

    Returns the networks with the last stage's EMA denoiser, and the loss history.
    ``accelerator`` (default: :func:`~xr2ct_lib.train.diffusion.default_accelerator`)
    spreads the batches over the processes of ``accelerate launch``. ``pretrain_data`` (the
    CTPA collection, :func:`~xr2ct_lib.train.collection.collection_data`) replaces the cohort
    in the unconditional and DRR stages; ``loss_cfg`` is a dict stage → loss terms
    (:func:`~xr2ct_lib.train.diffusion.run_staged_training`); ``init_state`` is a denoiser
    state dict to start from.
    """
    objective = build_model(cfg)
    if init_state is not None:
        objective.denoiser.load_pretrained_state(init_state)
    cohort_data = training_data(cfg, train_idx)
    data = cohort_data
    if pretrain_data is not None:
        data = {"uncond": pretrain_data, "drr": pretrain_data, "cxr": cohort_data}
    if objective.denoiser.cond_embed_type == "projection":
        objective.denoiser.set_condition_statistics(condition_embeddings(data))
    res = run_staged_training(
        objective, data, steps=tuple(steps), batch=cfg.profile.batch_size, ckpt_dir=ckpt_dir,
        lrs=tuple(lrs), resume=resume, seed=cfg.seed, ckpt_every=ckpt_every,
        accelerator=accelerator, loss_cfg=loss_cfg,
    )  # fmt: skip
    return trained_generator(cfg, objective, res.ema_state), res.history


def train_xray2ctpa(
    cfg: RunConfig, test_fold: int | None = None, resume: bool = True
) -> tuple[Path, pd.DataFrame]:
    """The book's live run (short schedule) on the training folds of ``test_fold``.

    Always on this run's own latents and embeddings (chapters 2 and 3), whatever
    ``cfg.weights``; writes the bundle ``models/bundle`` (with its provenance) and returns
    its folder and the loss history (:func:`xr2ct_lib.generation.load.live_generator` loads
    it). A finished run with the same recipe is reused.
    """
    from xr2ct_lib.train.provenance import training_provenance

    cfg = dataclasses.replace(cfg, weights="trained")
    p = cfg.profile
    test_fold = p.test_fold if test_fold is None else test_fold
    cohort = PreparedCohort(cfg.run_dir)
    train_idx = fold_split(cohort.folds, test_fold, p.n_folds)["train"]
    sched = p.schedule("short")
    recipe = recipe_key(kind="xray2ctpa", profile=p.name, steps=sched.diffusion, lrs=sched.lrs,
                        **p.denoiser_recipe(), ids=[cohort.ids[i] for i in train_idx],
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
        return bundle, pd.read_csv(hist_file)
    t0 = time.perf_counter()
    generator, history = train_generator(
        cfg, train_idx, sched.diffusion, sched.lrs, models / "diffusion" / recipe, resume
    )
    seconds = time.perf_counter() - t0
    prov = training_provenance(cfg, cohort, train_idx, sched, history,
                               command=f"train_xray2ctpa(test_fold={test_fold}) (chapter 4)",
                               seconds=seconds)  # fmt: skip
    generator.save(bundle, provenance=prov)
    atomic_write_text(hist_file, history.to_csv(index=False))
    atomic_write_text(recipe_file, json.dumps({"key": recipe, "seconds": seconds}))
    return bundle, history
