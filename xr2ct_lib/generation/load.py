"""The generator a run uses: the shipped bundle's pipeline or the live run's.

:func:`load_generator` answers ``cfg.weights`` (:mod:`xr2ct_lib.run.networks`);
:func:`live_generator` trains (or reuses) chapter 4's live run and loads its bundle;
:func:`sample_unconditional` draws latents with the condition dropped (Fig. 4).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from xr2ct_lib.config import RunConfig
from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline
from xr2ct_lib.models import halves as H
from xr2ct_lib.run.networks import networks_for
from xr2ct_lib.train.generator import train_xray2ctpa


def live_generator(
    cfg: RunConfig, test_fold: int | None = None
) -> tuple[XRay2CTPAPipeline, pd.DataFrame]:
    """Chapter 4's live run (:func:`~xr2ct_lib.train.generator.train_xray2ctpa`: trained, or
    reused when finished with the same recipe), loaded from its bundle; and its loss history."""
    bundle, history = train_xray2ctpa(cfg, test_fold)
    return XRay2CTPAPipeline.from_pretrained(bundle, cfg.profile), history


def load_generator(cfg: RunConfig) -> XRay2CTPAPipeline:
    """The pipeline of ``cfg.weights``: the shipped bundle (provenance checked), or the live
    run's (:func:`live_generator`)."""
    nets = networks_for(cfg)
    if nets.weights == "shipped":
        return XRay2CTPAPipeline.from_pretrained(nets.bundle, cfg.profile)
    return live_generator(cfg)[0]


@torch.no_grad()
def sample_unconditional(cfg: RunConfig, pipe: XRay2CTPAPipeline, n: int) -> np.ndarray:
    """``n`` normalised half-volume latents (n, C, d, h, w) sampled with the condition dropped."""
    p = cfg.profile
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    k = H.samples_per_volume(p.halves)
    n_samples = n if k == 2 else (n + 1) // 2
    x = pipe.denoise(cond=None, batch=n_samples, generator=gen)
    return H.per_half(x, p.halves)[:n].numpy()
