"""``XRay2CTPAPipeline``: the one generation path, in the manner of a diffusers pipeline.

A chest X-ray goes in, a CTPA volume comes out::

    pipe = XRay2CTPAPipeline.from_pretrained("weights/workshop")   # provenance checked
    out = pipe(cxr, num_inference_steps=50, generator=torch.Generator().manual_seed(0))
    out.volumes   # (B, D, H, W) in [−1, 1] (output_type="unit") or HU ("hu")
    out.latents   # (B, 2, C, d, h, w): the two half volumes' VAE latents

The steps: embed the X-ray (the bundle's encoder), denoise the latent of both halves from
noise (one joint sample of 2C channels, or the two halves as separate samples: the
profile's ``halves``), with classifier-free guidance, undo the latent normalisation, decode
each half slice by slice (the VAE) and interleave the halves. The notebooks
(:func:`xr2ct_lib.generation.cache.generate_patients`), ``xr2ct generate``
(:mod:`xr2ct_lib.generation.volume`, :mod:`~xr2ct_lib.generation.cohort`) and the tests
all call it; the same bundle, X-ray and seed give the same volume, bit for bit. The
samplers and their default steps: :mod:`xr2ct_lib.generation.samplers`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import BaseOutput

from xr2ct_lib.config import Profile
from xr2ct_lib.data.hu_window import PAPER_WINDOW, HUWindow
from xr2ct_lib.generation.samplers import sampler_scheduler, sampling
from xr2ct_lib.models import bundle as B
from xr2ct_lib.models import halves as H
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.models.normalizer import LatentNormalizer
from xr2ct_lib.utils import progress as progress_bar

OUTPUT_TYPES = ("unit", "hu", "latent")
SAMPLING = B.SAMPLING  # the profile fields that say how to sample, not what was trained


@dataclass
class XRay2CTPAPipelineOutput(BaseOutput):
    """``volumes`` (B, D, H, W) float32 NumPy ([−1, 1] or HU; None for ``"latent"``),
    ``latents`` (B, 2, C, d, h, w) raw VAE latents, ``seconds`` spent."""

    volumes: np.ndarray | None
    latents: torch.Tensor
    seconds: float


def noise_seed(seed: int, index: int) -> int:
    """The noise seed of the patient at position ``index`` of a cohort run with ``seed``
    (the book records it with each generated volume; ``xr2ct generate`` uses it too)."""
    return int(seed) * 100_003 + int(index)


def merge_halves(even: np.ndarray, odd: np.ndarray) -> np.ndarray:
    from xr2ct_lib.data.preprocess import merge_halves as merge

    return merge(even, odd)


class XRay2CTPAPipeline:
    """Denoiser + noise schedule + VAE + CXR encoder + latent normaliser + profile.

    ``vae`` and ``encoder`` may be None for latent-only use (``output_type="latent"`` with
    ``cxr_embeds``). ``key`` identifies the weights (the bundle's fingerprint when loaded).
    """

    def __init__(
        self,
        denoiser: LatentDenoiser3D,
        scheduler,
        profile: Profile,
        normalizer: LatentNormalizer,
        vae=None,
        encoder=None,
        provenance: dict | None = None,
        window: HUWindow = PAPER_WINDOW,
        key: str = "unsaved",
    ) -> None:
        expect = profile.diffusion_shape[0]
        if denoiser.in_channels != expect:
            raise ValueError(
                f"the denoiser takes {denoiser.in_channels} channels; profile {profile.name} "
                f"with {profile.halves} halves needs {expect}"
            )
        self.denoiser, self.scheduler, self.profile = denoiser.eval(), scheduler, profile
        self.normalizer, self.vae, self.encoder = normalizer, vae, encoder
        self.provenance, self.window, self.key = provenance, window, key

    # --------------------------------------------------------------------------- storage
    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        profile: Profile | None = None,
        check: bool = True,
        allow_download: bool | None = None,
    ) -> XRay2CTPAPipeline:
        """Load a bundle. With ``check``, its provenance must match the current cohort
        generator (and ``profile``, when given): :func:`.bundle.check_provenance`; its
        profile must describe its networks (:func:`.bundle.check_consistency`). The sampling
        defaults (``SAMPLING``) are ``profile``'s when given, else the bundle's. A hub model
        named by the bundle is taken from the local cache unless ``allow_download``."""
        from xr2ct_lib.models.cxr_encoder import load_encoder
        from xr2ct_lib.models.vae import load_vae

        bundle = B.check_bundle(directory)
        prov = B.check_provenance(bundle, profile) if check else B.read_provenance(bundle)
        bundle_profile = B.check_consistency(bundle)
        if profile is not None:  # how to sample is the run's choice, not the training's
            bundle_profile = replace(bundle_profile, **{f: getattr(profile, f) for f in SAMPLING})
        denoiser, scheduler = B.read_denoiser(bundle)
        encoder = load_encoder(bundle / "encoder", allow_download=allow_download)
        return cls(denoiser, scheduler, bundle_profile, B.read_normalizer(bundle),
                   vae=load_vae(bundle / "vae"), encoder=encoder, provenance=prov,
                   key=B.fingerprint(bundle))  # fmt: skip

    def save_pretrained(
        self,
        directory: str | Path,
        dtype: torch.dtype | None = None,
        provenance: dict | None = None,
        loss_curve=None,
    ) -> Path:
        """Write the bundle (:func:`~xr2ct_lib.models.bundle.write_bundle`)."""
        return B.write_bundle(directory, self.denoiser, self.scheduler, self.profile,
                              self.normalizer, self.vae, self.encoder, dtype=dtype,
                              provenance=provenance or self.provenance,
                              loss_curve=loss_curve)  # fmt: skip

    def load_lora(self, directory: str | Path) -> XRay2CTPAPipeline:
        """Apply the LoRA adapters saved in ``directory`` (:mod:`xr2ct_lib.models.lora`) to
        this pipeline's denoiser, in place; they must have been trained on this bundle."""
        from xr2ct_lib.files import sha256_file
        from xr2ct_lib.models.lora import WEIGHTS_NAME, load_lora

        base = self.key.split("+lora-")[0]
        load_lora(self.denoiser, directory, base_key=None if base == "unsaved" else base)
        digest = sha256_file(Path(directory) / WEIGHTS_NAME)
        self.key = f"{self.key}+lora-{digest[:12]}"
        return self

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def to(self, device) -> XRay2CTPAPipeline:
        for m in (self.denoiser, self.vae, self.encoder):
            if isinstance(m, torch.nn.Module):
                m.to(device)
        return self

    # -------------------------------------------------------------------------- stages
    @torch.no_grad()
    def encode_cxr(self, cxr: torch.Tensor) -> torch.Tensor:
        """Preprocessed X-rays (B, 3, S, S) in [0, 1] → embeddings (B, E)."""
        if self.encoder is None:
            raise ValueError("this pipeline has no CXR encoder: pass cxr_embeds")
        s = self.profile.cxr_size
        if cxr.ndim != 4 or tuple(cxr.shape[1:]) != (3, s, s):
            raise ValueError(f"X-rays must be (B, 3, {s}, {s}), got {tuple(cxr.shape)}")
        if isinstance(self.encoder, torch.nn.Module):
            self.encoder.eval()
        return torch.as_tensor(self.encoder.embed(cxr.to(self.device))).float()

    def guided_prediction(self, x, t, cond, label, guidance_scale: float) -> torch.Tensor:
        """The denoiser's prediction with classifier-free guidance: u + s·(c − u)."""
        den = self.denoiser
        b = x.shape[0]
        if cond is None and label is None:
            return den(x, t, drop_mask=torch.ones(b, dtype=torch.bool, device=x.device))
        keep = torch.zeros(b, dtype=torch.bool, device=x.device)
        if guidance_scale == 1.0:
            return den(x, t, cond=cond, label=label, drop_mask=keep)
        if guidance_scale == 0.0:  # u + 0·(c − u): the unconditional prediction alone
            return den(x, t, cond=cond, label=label, drop_mask=~keep)
        two = lambda a: None if a is None else torch.cat([a, a])  # noqa: E731
        pred = den(torch.cat([x, x]), t, cond=two(cond), label=two(label),
                   drop_mask=torch.cat([keep, ~keep]))  # fmt: skip
        conditional, unconditional = pred.chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    @torch.no_grad()
    def denoise(
        self,
        *,
        cond: torch.Tensor | None,
        batch: int,
        num_inference_steps: int | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        label: torch.Tensor | None = None,
        eta: float = 0.0,
        progress: bool = False,
    ) -> torch.Tensor:
        """``batch`` normalised diffusion samples from noise (``cond`` None: unconditional).

        ``sampler`` and ``num_inference_steps`` default to the profile's
        (:func:`~xr2ct_lib.generation.samplers.sampling`). Noise comes from ``generator``
        (a CPU generator).
        """
        p = self.profile
        train_timesteps = int(self.scheduler.config.num_train_timesteps)
        sampler, num_inference_steps = sampling(p, train_timesteps, sampler, num_inference_steps)
        device = self.device
        if cond is not None:
            cond = cond.to(device)
            if cond.shape[0] != batch:
                raise ValueError(f"cond has {cond.shape[0]} rows for a batch of {batch}")
        if label is not None:
            label = torch.as_tensor(label, device=device).long().reshape(batch)
        sched = sampler_scheduler(self.scheduler, sampler)
        sched.set_timesteps(int(num_inference_steps), device=device)
        shape = (batch, *p.diffusion_shape)
        x = torch.randn(shape, generator=generator).to(device) * sched.init_noise_sigma
        extra = {"generator": generator} if sampler in ("ddpm", "ddim") else {}
        if sampler == "ddim":
            extra["eta"] = eta
        self.denoiser.eval()
        desc = f"{sampler} sampling"
        for t in progress_bar(sched.timesteps, desc=desc, disable=not progress, leave=False):
            model_in = sched.scale_model_input(x, t)
            pred = self.guided_prediction(model_in, t.reshape(1), cond, label, guidance_scale)
            x = sched.step(pred, t, x, **extra).prev_sample
        return x

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Raw latents (B, 2, C, d, h, w) → volumes (B, D, H, W) in [−1, 1], float32."""
        if self.vae is None:
            raise ValueError("this pipeline has no VAE: use output_type='latent'")
        vols = []
        for z in latents:
            halves = [self.vae.decode_volume(z[h]).float().cpu().numpy() for h in range(2)]
            vols.append(np.clip(merge_halves(*halves), -1.0, 1.0).astype(np.float32))
        out = np.stack(vols)
        if out.shape[1:] != tuple(self.profile.ct_size):
            raise ValueError(
                f"decoded volumes {out.shape[1:]}, profile says {self.profile.ct_size}"
            )
        return out

    # ------------------------------------------------------------------------- __call__
    @torch.no_grad()
    def __call__(
        self,
        cxr: torch.Tensor | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        cxr_embeds: torch.Tensor | None = None,
        output_type: str = "unit",
        label: torch.Tensor | None = None,
        progress: bool = False,
    ) -> XRay2CTPAPipelineOutput:
        """Generate one volume per X-ray.

        ``cxr`` (B, 3, S, S) preprocessed X-rays in [0, 1], or ``cxr_embeds`` (B, E) their
        embeddings; ``guidance_scale`` 1 is plain conditional sampling, > 1 classifier-free
        guidance; ``output_type`` "unit" ([−1, 1]), "hu" (the HU window) or "latent".
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if (cxr is None) == (cxr_embeds is None):
            raise ValueError("pass exactly one of cxr and cxr_embeds")
        t0 = time.perf_counter()
        cond = self.encode_cxr(cxr) if cxr_embeds is None else torch.as_tensor(cxr_embeds).float()
        halves = self.profile.halves
        k = H.samples_per_volume(halves)
        if label is not None:
            label = H.repeat_per_sample(torch.as_tensor(label).reshape(-1), halves)
        x = self.denoise(cond=H.repeat_per_sample(cond, halves), batch=cond.shape[0] * k,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                         generator=generator, sampler=sampler, label=label,
                         progress=progress)  # fmt: skip
        c = self.profile.latent_shape[0]
        z = self.normalizer.denormalize(H.from_diffusion(x.float().cpu(), halves, c))
        vols = None
        if output_type != "latent":
            vols = self.decode(z)
            if output_type == "hu":
                vols = self.window.to_hu(vols)
        return XRay2CTPAPipelineOutput(volumes=vols, latents=z, seconds=time.perf_counter() - t0)
