"""XRay2CTPAPipeline (:mod:`xr2ct_lib.generation.pipeline`): seeded samplers, classifier-free
guidance and the profile's sampling defaults, on a tiny latent-only pipeline."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler
from diffusion_tiny import EMB, LATENT, TINY, tiny_model, tiny_pipe


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_samplers_are_seeded_and_guided(sampler):
    pipe = tiny_pipe(tiny_model())
    cond = torch.randn(2, EMB, generator=torch.Generator().manual_seed(0))

    def run(seed, scale=1.0, c=cond):
        return pipe.denoise(
            cond=c,
            batch=2,
            num_inference_steps=4,
            guidance_scale=scale,
            generator=torch.Generator().manual_seed(seed),
            sampler=sampler,
        )

    a, b = run(0), run(0)
    assert a.shape == (2, *LATENT) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    assert (run(1) - a).abs().amax() > 1e-3
    assert (run(0, scale=3.0) - a).abs().amax() > 1e-4
    assert run(0, c=None).shape == (2, *LATENT)
    if sampler != "dpm++":  # DDPM and DDIM end on a clipped x0; DPM-Solver++'s multistep
        assert a.abs().max() <= 1.0 + 1e-5  # update is not bounded by the clip


def test_guidance_scale_one_is_plain_conditional_and_zero_is_unconditional():
    model = tiny_model()
    pipe = tiny_pipe(model)
    cond = torch.randn(1, EMB)
    x = torch.randn(1, *LATENT)
    t = torch.tensor([500])
    with torch.no_grad():
        p_c = model.denoiser(x, t, cond=cond)
        p_u = model.denoiser(x, t)
        torch.testing.assert_close(pipe.guided_prediction(x, t, cond, None, 1.0), p_c)
        torch.testing.assert_close(
            pipe.guided_prediction(x, t, cond, None, 0.0), p_u, atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            pipe.guided_prediction(x, t, cond, None, 2.5), p_u + 2.5 * (p_c - p_u), atol=1e-5,
            rtol=1e-5,
        )  # fmt: skip


def test_pipeline_profile_defaults_choose_sampler_and_steps(monkeypatch):
    """No sampler/steps given: the profile's (DDPM: every training timestep)."""
    pipe = tiny_pipe(tiny_model())
    seen = []
    orig = DDIMScheduler.set_timesteps
    spy = lambda self, n, *a, **k: seen.append(n) or orig(self, n, *a, **k)  # noqa: E731
    monkeypatch.setattr(DDIMScheduler, "set_timesteps", spy)
    pipe.denoise(cond=None, batch=1)
    assert TINY.sampler == "ddim" and seen == [TINY.sample_steps_fast]
