"""The diffusion process: the noise schedule (a diffusers scheduler) and the training objective.

As the reference: 1000 DDPM steps with the cosine (``squaredcos_cap_v2``) beta schedule, an
L1 loss on the network's prediction, optional extra terms on the predicted clean latent
(:mod:`xr2ct_lib.train.losses`). The diffusers scheduler owns every piece of noise
arithmetic: ᾱ_t, ``add_noise``, ``get_velocity`` (v-prediction) and the sampler steps
(:mod:`xr2ct_lib.generation.samplers`: DDPM, DDIM, DPM-Solver++). What the network predicts is the
scheduler's ``prediction_type``: ``"epsilon"`` (the noise, as the paper), ``"sample"`` (the
clean latent x0) or ``"v_prediction"``.

Latents are expected in [−1, 1] (dataset-wide min–max normalisation), so predicted clean
latents are clipped to that range during sampling, as the reference does. Sampling itself
(the loop, classifier-free guidance) is the pipeline's job (:mod:`xr2ct_lib.generation.pipeline`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from xr2ct_lib.models.denoiser import LatentDenoiser3D

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def noise_scheduler(
    num_train_timesteps: int = 1000,
    beta_schedule: str = "squaredcos_cap_v2",
    clip_sample: bool = True,
    prediction_type: str = "epsilon",
) -> DDPMScheduler:
    """The training noise schedule: a diffusers ``DDPMScheduler`` (the paper's defaults)."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
        )
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        clip_sample=clip_sample,
        prediction_type=prediction_type,
    )


def _abar(scheduler, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The scheduler's ᾱ_t, shaped to broadcast over ``like``."""
    t = torch.as_tensor(t, device=like.device).long().reshape(-1).expand(like.shape[0])
    a = scheduler.alphas_cumprod.to(device=like.device, dtype=like.dtype)[t]
    return a.view(-1, *([1] * (like.ndim - 1)))


def training_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
    """What the network should output for ``scheduler.add_noise(x0, noise, t)``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    return scheduler.get_velocity(x0, noise, torch.as_tensor(t, device=x0.device))


def predicted_sample(scheduler, x_t: torch.Tensor, t, prediction: torch.Tensor) -> torch.Tensor:
    """x̂0 from the network's prediction (differentiable, not clipped).

    ε: x̂0 = (x_t − √(1−ᾱ)·ε̂) / √ᾱ; v: x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂; sample: the prediction.
    """
    kind = scheduler.config.prediction_type
    if kind == "sample":
        return prediction
    a = _abar(scheduler, t, prediction)
    if kind == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * prediction
    return (x_t - (1 - a).sqrt() * prediction) / a.sqrt()


class DiffusionLoss(nn.Module):
    """The training objective of a :class:`LatentDenoiser3D` under a noise schedule.

    ``forward`` is the loss, so that ``accelerate``/DDP wrap the whole objective and
    synchronise the denoiser's gradients.
    """

    def __init__(self, denoiser: LatentDenoiser3D, scheduler: DDPMScheduler) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.scheduler = scheduler

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def forward(
        self,
        x0: torch.Tensor,
        cond: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
        terms=None,
        generator: torch.Generator | None = None,
        drop_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for clean latents ``x0`` (B, C, D, h, w).

        Draws t ~ U{0..T−1} and noise ~ N(0, I) from ``generator`` (a CPU generator, so the
        draw is the same on every device), noises ``x0`` with the scheduler, and returns
        ``{"l1", <extra terms>, "total"}`` (weighted sum) plus ``"disc"`` (the
        discriminator's own loss) when the adversarial term is on. ``terms`` is a
        :class:`~xr2ct_lib.train.losses.LossTerms` or None (L1 only). ``drop_mask`` (B,)
        marks samples whose condition is replaced by the null embedding; if None, drawn
        with probability ``denoiser.cond_drop_prob``.
        """
        b = x0.shape[0]
        t = torch.randint(0, self.num_train_timesteps, (b,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        if drop_mask is None:
            drop_mask = torch.rand(b, generator=generator) < self.denoiser.cond_drop_prob
        t, noise = t.to(x0.device), noise.to(device=x0.device, dtype=x0.dtype)
        drop_mask = drop_mask.to(x0.device)
        x_t = self.scheduler.add_noise(x0, noise, t)
        label_in = label if self.denoiser.num_classes is not None else None
        pred = self.denoiser(x_t, t, cond=cond, label=label_in, drop_mask=drop_mask)
        losses: dict[str, torch.Tensor] = {}
        total = x0.new_zeros((), dtype=torch.float32)
        if terms is None or terms.config.l1:
            target = training_target(self.scheduler, x0, noise, t)
            losses["l1"] = F.l1_loss(pred.float(), target.float())
            total = total + losses["l1"]
        if terms is not None and terms.active:
            x0_pred = predicted_sample(self.scheduler, x_t, t, pred)
            slices = terms.slices(x0_pred, x0, generator) if terms.needs_slices else None
            extra = terms.generator_terms(x0_pred, x0, label, slices=slices)
            weights = terms.config.weights()
            for k, v in extra.items():
                losses[k] = v
                total = total + weights[k] * v.float()
            if terms.config.adversarial:
                losses["disc"] = terms.discriminator_loss(*slices)
        losses["total"] = total
        return losses
