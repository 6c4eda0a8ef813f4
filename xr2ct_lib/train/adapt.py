"""Chapter 11: adapting the generator to an external cohort: zero-shot, LoRA, full fine-tuning.

The paper fine-tunes its model on very few LIDC samples. Here the generator of the run's
``weights`` is adapted on a small training split of the external cohort
(:mod:`xr2ct_lib.data.external`) with the X-ray stage's objective, either through LoRA
adapters (:mod:`xr2ct_lib.models.lora`: the base weights frozen) or by training every
weight, for the same steps and learning rate; zero-shot is the generator as it is.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from xr2ct_lib.models import halves as H

if TYPE_CHECKING:  # the caller passes the pipeline in; training never builds one
    from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline

MODES = ("zero-shot", "LoRA", "full fine-tuning")


@dataclass
class Adapted:
    pipe: XRay2CTPAPipeline
    mode: str
    trainable: int
    total: int
    seconds: float
    history: pd.DataFrame | None


@torch.no_grad()
def external_training_data(pipe: XRay2CTPAPipeline, ct: np.ndarray, cxr: np.ndarray, labels):
    """The diffusion samples of external patients: their VAE latents (normalised with the
    bundle's constants) and X-ray embeddings, in the profile's halves layout."""
    from xr2ct_lib.train.latent_data import LatentPairDataset

    z = torch.stack([pipe.vae.encode_halves(v) for v in ct])
    zn = torch.as_tensor(pipe.normalizer.normalize(z.numpy()), dtype=torch.float32)
    emb = pipe.encode_cxr(torch.from_numpy(np.asarray(cxr))).cpu()
    halves = pipe.profile.halves
    return LatentPairDataset(
        H.to_diffusion(zn, halves), cxr_embeddings=H.repeat_per_sample(emb, halves),
        labels=H.repeat_per_sample(torch.tensor(np.asarray(labels)).long(), halves),
    )  # fmt: skip


def adapt(
    pipe: XRay2CTPAPipeline,
    data,
    mode: str,
    steps: int,
    lr: float,
    rank: int = 4,
    seed: int = 0,
    batch: int = 2,
) -> Adapted:
    """A copy of ``pipe`` adapted by ``mode`` ("zero-shot", "LoRA", "full fine-tuning")."""
    from xr2ct_lib.models.diffusion import DiffusionLoss
    from xr2ct_lib.models.lora import add_lora, trainable_parameters
    from xr2ct_lib.train.diffusion import train_stage

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    den = copy.deepcopy(pipe.denoiser)
    if mode == "zero-shot":
        return Adapted(pipe, mode, 0, trainable_parameters(den)[1], 0.0, None)
    if mode == "LoRA":
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # A's initial weights (B starts at zero)
            add_lora(den, rank)
    else:
        den.requires_grad_(True)
    trainable, total = trainable_parameters(den)
    t0 = time.perf_counter()
    res = train_stage(DiffusionLoss(den, pipe.scheduler), data, "cxr", steps, lr=lr,
                      batch=batch, seed=seed, progress=False)  # fmt: skip
    den.load_state_dict(res.ema_state)
    out = copy.copy(pipe)
    out.denoiser = den.eval()
    out.key = f"{pipe.key}-{mode.replace(' ', '-')}-{steps}"
    return Adapted(out, mode, trainable, total, time.perf_counter() - t0, res.history)


@torch.no_grad()
def generate_external(pipe: XRay2CTPAPipeline, cxr: np.ndarray, seed: int) -> dict:
    """One volume per external X-ray (seed ``seed`` + index), with the seconds each took."""
    p = pipe.profile
    cts, secs = [], []
    for i, x in enumerate(np.asarray(cxr)):
        gen = torch.Generator().manual_seed(seed + i)
        out = pipe(torch.from_numpy(x[None]), num_inference_steps=p.sample_steps_fast,
                   sampler=p.sampler, generator=gen)  # fmt: skip
        cts.append(out.volumes[0])
        secs.append(out.seconds)
    return {"ct": np.stack(cts), "seconds": np.array(secs)}


def cost_table(runs: dict[str, Adapted]) -> pd.DataFrame:
    """Trainable parameters and training time of each mode."""
    return pd.DataFrame({
        name: {"trainable parameters": a.trainable, "of total": a.total,
               "trainable %": round(100 * a.trainable / a.total, 2),
               "train s": round(a.seconds, 1)}
        for name, a in runs.items()
    }).T  # fmt: skip
