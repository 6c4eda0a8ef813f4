"""Training the in-book compressors (reused while their recipe is unchanged, :mod:`.cache`).

- :func:`slice_vae_for`: the profile's slice-wise VAE, loaded (the frozen SD VAE) or
  trained (:func:`train_slice_vae`: the stand-in 2D VAE on axial slices of the training
  folds, L1 + a small KL term, in ``models/vae/``);
- :func:`train_compressor3d`: the 3D VQ-VAE of the Table 4 comparison, ``models/ae3d/``.

The cohort's latents are written by :func:`xr2ct_lib.run.latents.encode_cohort`.
"""

from __future__ import annotations

import pandas as pd
import torch

from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.models.compressor3d import Compressor3D, load_compressor3d
from xr2ct_lib.models.vae import SliceVAE, load_sd_vae, load_vae, make_standin_vae
from xr2ct_lib.train.cache import TrainCache, train_or_reuse
from xr2ct_lib.train.fit import fit, flip_lr
from xr2ct_lib.utils import seed_everything


def slice_vae_for(
    cfg: RunConfig, cohort: PreparedCohort, train_idx
) -> tuple[SliceVAE, pd.DataFrame | None]:
    """``(vae, history)``: the frozen SD VAE when the profile trains none (``vae_steps`` 0,
    history None), else the stand-in trained (or reused) on the ``train_idx`` patients."""
    if cfg.profile.vae_steps == 0:
        return load_sd_vae(), None
    return train_slice_vae(cfg, cohort, train_idx)


def train_slice_vae(
    cfg: RunConfig,
    cohort: PreparedCohort,
    train_idx,
    steps: int | None = None,
    kl_weight: float = 1e-6,
) -> tuple[SliceVAE, pd.DataFrame]:
    """Train (or reuse) the stand-in VAE on axial slices of the ``train_idx`` patients, with
    the profile's ``vae_steps`` (or ``steps``) at its ``vae_lr`` (L1 + ``kl_weight`` KL)."""
    p = cfg.profile

    def loss_of(vae: SliceVAE):
        slices = torch.from_numpy(cohort.stack("ct", train_idx)).flatten(0, 1)[:, None]

        def loss_fn(step, gen):
            idx = torch.randint(len(slices), (p.vae_batch,), generator=gen)
            x = flip_lr(slices[idx], gen)
            post = vae.posterior(x)
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
            rec = vae.autoencoder.decode(z).sample
            l1 = (rec - x).abs().mean()
            kl = post.kl().mean() / x[0].numel()
            return {"loss": l1 + kl_weight * kl, "l1": l1, "kl": kl}

        return loss_fn

    return _fit_cached(
        cfg, cohort, train_idx, "vae", lambda: make_standin_vae(p), loss_of, load_vae, "2D VAE",
        steps=p.vae_steps if steps is None else steps, lr=p.vae_lr,
        kind="slice_vae", kl=kl_weight,
    )  # fmt: skip


def train_compressor3d(
    cfg: RunConfig, cohort: PreparedCohort, train_idx, steps: int | None = None
) -> tuple[Compressor3D, pd.DataFrame]:
    """Train (or reuse) the 3D VQ-VAE on whole training volumes (batch 2, L1 + VQ loss) with
    the profile's ``ae3d_steps`` (or ``steps``) at its ``vae_lr``."""
    p = cfg.profile

    def loss_of(model: Compressor3D):
        vols = torch.from_numpy(cohort.stack("ct", train_idx))[:, None]

        def loss_fn(step, gen):
            x = flip_lr(vols[torch.randint(len(vols), (2,), generator=gen)], gen)
            rec, q = model(x)
            l1 = (rec - x).abs().mean()
            return {"loss": l1 + q, "l1": l1, "vq": q}

        return loss_fn

    return _fit_cached(
        cfg, cohort, train_idx, "ae3d", lambda: Compressor3D.for_profile(p), loss_of,
        load_compressor3d, "3D VQ-VAE", steps=p.ae3d_steps if steps is None else steps,
        lr=p.vae_lr, kind="vqvae3d",
    )  # fmt: skip


def _fit_cached(cfg, cohort, train_idx, name, build, loss_of, load, desc, steps, lr, **recipe):
    """Train (or reuse) ``build()`` with :func:`fit` on ``loss_of(model)`` into ``models/<name>``.

    The recipe is ``recipe`` with ``steps`` and ``lr`` (and the run's profile, patients and
    seed); the model is built right after the global seed is set, so it starts the same.
    """
    ids = [cohort.ids[i] for i in train_idx]
    cache = TrainCache.for_run(cfg, name, ids, steps=steps, lr=lr, **recipe)

    def train():
        seed_everything(cfg.seed)
        model = build()
        loss_fn = loss_of(model)
        model.train()
        history = fit(loss_fn, list(model.parameters()), steps, lr, cfg.seed, desc)
        model.eval().save(cache.directory)
        return model, history

    return train_or_reuse(cache, load, train)
