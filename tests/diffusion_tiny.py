"""A tiny denoiser, its objective and a latent-only pipeline, shared by the tests of training
(test_diffusion_train.py) and of the pipeline (test_generation_pipeline.py)."""

from __future__ import annotations

import dataclasses

import torch

from xr2ct_lib.config import PROFILES
from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.models.diffusion import DiffusionLoss, noise_scheduler
from xr2ct_lib.models.normalizer import LatentNormalizer

LATENT = (4, 4, 8, 8)  # C, D, h, w
EMB = 32


# the profile whose latent of a half is LATENT, each half a sample (the paper's layout)
TINY = dataclasses.replace(
    PROFILES["smoke"], ct_size=(8, 16, 16), ct_spacing_mm=2.5, cxr_size=32, vae_channels=(8, 8),
    vae_latent_channels=4, unet_channels=(8, 16), cxr_embed_dim=EMB, sample_steps_fast=3,
    halves="independent", vae_batch=8,
)  # fmt: skip


def tiny_model(seed: int = 0, prediction_type: str = "epsilon", **kw) -> DiffusionLoss:
    torch.manual_seed(seed)
    args = {"in_channels": 4, "channels": (8, 16), "cond_dim": EMB, "attention_head_dim": 8}
    args.update(kw)
    return DiffusionLoss(LatentDenoiser3D(**args), noise_scheduler(prediction_type=prediction_type))


def tiny_pipe(model: DiffusionLoss, **kw) -> XRay2CTPAPipeline:
    """A latent-only pipeline around ``model``'s denoiser (no VAE, no encoder)."""
    return XRay2CTPAPipeline(model.denoiser, model.scheduler, TINY, LatentNormalizer(-1.0, 1.0),
                             **kw)  # fmt: skip
