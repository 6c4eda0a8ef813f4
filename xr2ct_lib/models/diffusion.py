"""Latent diffusion: the denoiser, diffusers noise schedulers, the training loss, sampling, EMA.

Training follows the reference: 1000 DDPM steps with the cosine (``squaredcos_cap_v2``)
beta schedule, ε-prediction with an L1 loss, optional extra terms on the predicted clean
latent (see :mod:`xr2ct_lib.train.losses`), EMA of the weights with decay 0.995. Sampling
is DDPM (1000 steps, as in the paper) or a fast sampler (DDIM, DPM-Solver++), with
classifier-free guidance ``ε = ε_u + s·(ε_c − ε_u)``.

Latents are expected in [−1, 1] (dataset-wide min–max normalisation), so predicted clean
latents are clipped to that range during sampling, as the reference does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

from xr2ct_lib.checkpoint import load_checkpoint, prefixed, save_checkpoint, unprefixed
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.utils import progress as progress_bar

if TYPE_CHECKING:
    from diffusers.training_utils import EMAModel

    from xr2ct_lib.train.losses import LossTerms

SAMPLERS = ("ddpm", "ddim", "dpm++")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class LatentDiffusion(nn.Module):
    """A :class:`LatentDenoiser3D` with its noise schedule.

    ``forward`` is the training loss (so that ``accelerate``/DDP wrap the whole model and
    synchronise gradients); :meth:`sample` generates latents.

    Args:
        denoiser: the noise-prediction network.
        num_train_timesteps: diffusion steps T (1000).
        beta_schedule: diffusers beta schedule (``squaredcos_cap_v2`` = cosine).
        clip_sample: clip predicted clean latents to [−1, 1] while sampling.
        ema_decay: decay of the weight EMA (used by :meth:`enable_ema`).
        prediction_type: what the network predicts and the L1 loss compares, in diffusers'
            terms: ``"epsilon"`` (the noise, as the paper), ``"sample"`` (the clean latent
            x0) or ``"v_prediction"``.
    """

    def __init__(
        self,
        denoiser: LatentDenoiser3D,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        clip_sample: bool = True,
        ema_decay: float = 0.995,
        prediction_type: str = "epsilon",
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
            )
        self.denoiser = denoiser
        self.prediction_type = prediction_type
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            clip_sample=clip_sample,
            prediction_type=prediction_type,
        )
        self.register_buffer(
            "alphas_cumprod", self.scheduler.alphas_cumprod.clone().float(), persistent=False
        )
        self.ema_decay = float(ema_decay)
        self.ema: EMAModel | None = None

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    # --------------------------------------------------------------------------- EMA
    def enable_ema(self) -> EMAModel:
        """Start an EMA of the denoiser's weights at their current values."""
        from diffusers.training_utils import EMAModel

        self.ema = EMAModel(self.denoiser.parameters(), decay=self.ema_decay)
        return self.ema

    def ema_step(self) -> None:
        if self.ema is not None:
            self.ema.step(self.denoiser.parameters())

    def ema_state(self) -> dict[str, torch.Tensor]:
        """The EMA weights as a denoiser state dict (the online weights if EMA is off)."""
        state = {k: v.detach().clone() for k, v in self.denoiser.state_dict().items()}
        if self.ema is not None:
            names = [n for n, _ in self.denoiser.named_parameters()]
            for n, p in zip(names, self.ema.shadow_params, strict=True):
                state[n] = p.detach().clone()
        return state

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Temporarily swap the EMA weights into the denoiser (for evaluation / sampling)."""
        if self.ema is None:
            yield
            return
        params = list(self.denoiser.parameters())
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    # ------------------------------------------------------------------------ training
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def _abar(self, t, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=like.device).long().reshape(-1).expand(like.shape[0])
        a = self.alphas_cumprod.to(like.device)[t].view(-1, *([1] * (like.ndim - 1)))
        return a.to(like.dtype)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for x_t = √ᾱ·x0 + √(1−ᾱ)·ε."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        a = self._abar(t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x̂0 from the network output (differentiable, not clipped).

        ε: x̂0 = (x_t − √(1−ᾱ)·ε̂) / √ᾱ; v: x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂; sample: the output.
        """
        if self.prediction_type == "sample":
            return out
        a = self._abar(t, out)
        if self.prediction_type == "v_prediction":
            return a.sqrt() * x_t - (1 - a).sqrt() * out
        return (x_t - (1 - a).sqrt() * out) / a.sqrt()

    def forward(
        self,
        x0: torch.Tensor,
        cond: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
        terms: LossTerms | None = None,
        generator: torch.Generator | None = None,
        drop_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return self.training_loss(x0, cond, label, terms, generator, drop_mask)

    def training_loss(
        self,
        x0: torch.Tensor,
        cond: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
        terms: LossTerms | None = None,
        generator: torch.Generator | None = None,
        drop_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for clean latents ``x0`` (B, C, D, h, w).

        Draws t ~ U{0..T−1} and ε ~ N(0, I) from ``generator`` (a CPU generator, so the
        draw is the same on every device), predicts ε, and returns ``{"l1", <extra terms>,
        "total"}`` (weighted sum) plus ``"disc"`` (the discriminator's own loss, whose
        gradient reaches only the discriminator) when the adversarial term is on.
        ``drop_mask`` (B,) marks samples whose condition is replaced by the null
        embedding; if None, it is drawn with probability ``denoiser.cond_drop_prob``.
        """
        b = x0.shape[0]
        t = torch.randint(0, self.num_train_timesteps, (b,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        if drop_mask is None:
            drop_mask = torch.rand(b, generator=generator) < self.denoiser.cond_drop_prob
        t, noise = t.to(x0.device), noise.to(device=x0.device, dtype=x0.dtype)
        drop_mask = drop_mask.to(x0.device)
        x_t = self.add_noise(x0, noise, t)
        label_in = label if self.denoiser.num_classes is not None else None
        out = self.denoiser(x_t, t, cond=cond, label=label_in, drop_mask=drop_mask)
        losses: dict[str, torch.Tensor] = {}
        total = x0.new_zeros((), dtype=torch.float32)
        if terms is None or terms.config.l1:
            losses["l1"] = F.l1_loss(out.float(), self.target(x0, noise, t).float())
            total = total + losses["l1"]
        if terms is not None and terms.active:
            x0_pred = self.predict_x0(x_t, t, out)
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

    # ------------------------------------------------------------------------ sampling
    def make_scheduler(self, sampler: str = "ddim"):
        """A fresh diffusers scheduler of the given kind on this model's noise schedule."""
        cfg = self.scheduler.config
        if sampler == "ddpm":
            return DDPMScheduler.from_config(cfg)
        if sampler == "ddim":
            return DDIMScheduler.from_config(cfg)
        if sampler == "dpm++":
            # thresholding with sample_max_value=1 is a plain clip of x̂0 to [-1, 1]
            # (DPM-Solver has no clip_sample); without it x̂0 = (x − σε)/α explodes at the
            # first step, where the cosine schedule's α is ~0.
            clip = bool(cfg.clip_sample)
            return DPMSolverMultistepScheduler.from_config(
                cfg,
                algorithm_type="dpmsolver++",
                solver_order=2,
                thresholding=clip,
                dynamic_thresholding_ratio=1.0,
                sample_max_value=1.0,
            )
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")

    def guided_eps(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None,
        label: torch.Tensor | None,
        guidance_scale: float,
    ) -> torch.Tensor:
        b = x.shape[0]
        conditional = cond is not None or label is not None
        if not conditional:
            return self.denoiser(x, t, drop_mask=torch.ones(b, dtype=torch.bool, device=x.device))
        keep = torch.zeros(b, dtype=torch.bool, device=x.device)
        if guidance_scale == 1.0:
            return self.denoiser(x, t, cond=cond, label=label, drop_mask=keep)
        two = lambda a: None if a is None else torch.cat([a, a])  # noqa: E731
        eps = self.denoiser(
            torch.cat([x, x]),
            t,
            cond=two(cond),
            label=two(label),
            drop_mask=torch.cat([keep, ~keep]),
        )
        e_c, e_u = eps.chunk(2)
        return e_u + guidance_scale * (e_c - e_u)

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor | None,
        shape: tuple[int, ...],
        sampler: str = "ddim",
        steps: int | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = True,
        label: torch.Tensor | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        """Generate latents of ``shape`` (B, C, D, h, w) conditioned on ``cond`` (B, cond_dim).

        ``sampler`` is "ddpm" (default 1000 steps), "ddim" or "dpm++" (default 50 steps);
        ``guidance_scale`` 1 means plain conditional sampling, > 1 classifier-free guidance;
        ``cond=None`` samples unconditionally. Noise comes from ``generator`` (CPU).
        """
        device = next(self.denoiser.parameters()).device
        if cond is not None:
            cond = cond.to(device)
            if cond.shape[0] != shape[0]:
                raise ValueError(f"cond has {cond.shape[0]} rows for a batch of {shape[0]}")
        if label is not None:
            label = torch.as_tensor(label, device=device).long().reshape(shape[0])
        sched = self.make_scheduler(sampler)
        if steps is None:
            steps = self.num_train_timesteps if sampler == "ddpm" else 50
        sched.set_timesteps(int(steps), device=device)
        x = torch.randn(shape, generator=generator).to(device) * sched.init_noise_sigma
        was_training = self.denoiser.training
        self.denoiser.eval()
        extra = {"eta": eta, "generator": generator} if sampler == "ddim" else {}
        if sampler == "ddpm":
            extra = {"generator": generator}
        try:
            for t in progress_bar(
                sched.timesteps, desc=f"{sampler} sampling", disable=not progress
            ):
                model_in = sched.scale_model_input(x, t)
                eps = self.guided_eps(model_in, t.reshape(1), cond, label, guidance_scale)
                x = sched.step(eps, t, x, **extra).prev_sample
        finally:
            self.denoiser.train(was_training)
        return x

    # -------------------------------------------------------------------------- storage
    def save_pretrained(self, directory: str | Path, use_ema: bool = True) -> Path:
        """Inference weights (the EMA if on) + denoiser and schedule config, one folder."""
        state = self.ema_state() if use_ema else self.denoiser.state_dict()
        config = {
            "denoiser": self.denoiser.config,
            "scheduler": {
                "num_train_timesteps": self.num_train_timesteps,
                "beta_schedule": self.scheduler.config.beta_schedule,
                "clip_sample": bool(self.scheduler.config.clip_sample),
                "prediction_type": self.prediction_type,
            },
            "ema_decay": self.ema_decay,
            "weights": "ema" if (use_ema and self.ema is not None) else "online",
        }
        return save_checkpoint(directory, prefixed("denoiser", state), config)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LatentDiffusion:
        tensors, config = load_checkpoint(directory)
        for key in ("denoiser", "scheduler"):
            if key not in config:
                raise ValueError(f"{directory}/config.json is not a LatentDiffusion checkpoint")
        denoiser = LatentDenoiser3D.from_config(config["denoiser"])
        denoiser.load_state_dict(unprefixed("denoiser", tensors))
        return cls(denoiser, ema_decay=config.get("ema_decay", 0.995), **config["scheduler"])
