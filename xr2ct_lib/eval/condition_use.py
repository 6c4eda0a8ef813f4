"""Does the denoiser read its condition? The held-out denoising error with each patient's own
X-ray embedding, with another patient's, and with none.

A conditional denoiser that learnt nothing from its condition predicts a patient's clean latent
equally well from anyone's X-ray. One that reads it predicts better from the patient's own: the
relative gain of the own condition over another patient's (the conditions shifted by one
patient) is what the condition is worth to it, at each noise level. The gain matters most at
high noise, where the latent is mostly noise and the condition is all there is to go on; a
few-step sampler starts there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from xr2ct_lib.models.diffusion import training_target

TIMESTEPS = (200, 500, 800, 950)
BOOTSTRAP = 2000


@torch.no_grad()
def condition_use(
    denoiser,
    scheduler,
    latents: torch.Tensor,
    conditions: torch.Tensor,
    timesteps: tuple[int, ...] = TIMESTEPS,
    seed: int = 0,
    batch: int = 8,
) -> pd.DataFrame:
    """Per timestep, the mean squared error of the denoiser's prediction (against the
    scheduler's training target) on ``latents`` (N, C, D, h, w), normalised as in training,
    with ``conditions`` (N, E) as given ("own"), shifted by one patient ("another") and
    dropped ("none"); the gain ``1 − own / another`` (of the mean errors) with a paired
    bootstrap 95 % interval over patients. The noise is drawn from ``seed``, the same for the
    three conditions.
    """
    latents = torch.as_tensor(latents, dtype=torch.float32)
    conditions = torch.as_tensor(conditions, dtype=torch.float32)
    n = len(latents)
    if n < 2 or len(conditions) != n:
        raise ValueError(
            f"need ≥ 2 patients with one condition each, got {n} and {len(conditions)}"
        )
    denoiser = denoiser.eval()
    dtype = next(denoiser.parameters()).dtype
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = []
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=g)
        tt = torch.full((n,), int(t))
        x_t = scheduler.add_noise(latents, noise, tt)
        target = training_target(scheduler, latents, noise, tt)
        err = {}
        for name, cond, drop in (("own", conditions, False),
                                 ("another", conditions.roll(1, 0), False),
                                 ("none", conditions, True)):  # fmt: skip
            parts = []
            for i in range(0, n, batch):
                sl = slice(i, i + batch)
                mask = torch.full((len(x_t[sl]),), drop)
                pred = denoiser(x_t[sl].to(dtype), tt[sl], cond=cond[sl].to(dtype), drop_mask=mask)
                parts.append(((pred.float() - target[sl]) ** 2).mean(dim=(1, 2, 3, 4)))
            err[name] = torch.cat(parts).numpy()
        boot = rng.integers(0, n, (BOOTSTRAP, n))
        gains = 1 - err["own"][boot].mean(1) / err["another"][boot].mean(1)
        rows.append({
            "timestep": int(t), "own": float(err["own"].mean()),
            "another": float(err["another"].mean()), "none": float(err["none"].mean()),
            "gain": float(1 - err["own"].mean() / err["another"].mean()),
            "gain_lo": float(np.quantile(gains, 0.025)),
            "gain_hi": float(np.quantile(gains, 0.975)),
        })  # fmt: skip
    return pd.DataFrame(rows)
