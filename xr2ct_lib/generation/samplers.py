"""The samplers: the one registry of their names, the scheduler each one builds, and the
number of steps each takes when none is given.

Every sampler runs on the noise schedule a denoiser was trained with (a diffusers
``DDPMScheduler``, :func:`xr2ct_lib.models.diffusion.noise_scheduler`): ``ddpm`` walks every
training timestep by default (the paper), ``ddim`` and ``dpm++`` take the profile's
``sample_steps_fast``. The pipeline, ``xr2ct generate``, the book's cache and the CLI's
``--sampler`` choices all read :data:`SAMPLERS` and :func:`sampling`.
"""

from __future__ import annotations

SAMPLERS = ("ddpm", "ddim", "dpm++")


def default_steps(sampler: str, train_timesteps: int, fast_steps: int) -> int:
    """The steps ``sampler`` takes when none are given: every training timestep for DDPM,
    ``fast_steps`` (the profile's ``sample_steps_fast``) for the others."""
    return int(train_timesteps) if sampler == "ddpm" else int(fast_steps)


def sampling(profile, train_timesteps: int, sampler: str | None = None,
             steps: int | None = None) -> tuple[str, int]:  # fmt: skip
    """``(sampler, steps)``: the given ones, else ``profile``'s sampler and
    :func:`default_steps` (``train_timesteps``: the scheduler's ``num_train_timesteps``)."""
    sampler = sampler or profile.sampler
    if steps is None:
        steps = default_steps(sampler, train_timesteps, profile.sample_steps_fast)
    return sampler, int(steps)


def sampler_scheduler(scheduler, sampler: str = "ddim"):
    """A fresh diffusers scheduler of kind ``sampler`` on ``scheduler``'s noise schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    cfg = scheduler.config
    if sampler == "ddpm":
        return DDPMScheduler.from_config(cfg)
    if sampler == "ddim":
        return DDIMScheduler.from_config(cfg)
    if sampler == "dpm++":
        # thresholding with sample_max_value=1 is a plain clip of x̂0 to [-1, 1] (DPM-Solver
        # has no clip_sample); without it x̂0 = (x − σε)/α explodes at the first step, where
        # the cosine schedule's α is ~0.
        return DPMSolverMultistepScheduler.from_config(
            cfg,
            algorithm_type="dpmsolver++",
            solver_order=2,
            thresholding=bool(cfg.clip_sample),
            dynamic_thresholding_ratio=1.0,
            sample_max_value=1.0,
        )
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
