"""From a chest X-ray file to a generated CTPA volume (NIfTI), with a model bundle.

The model bundle (:mod:`xr2ct_lib.models.bundle`) holds the denoiser, VAE, CXR encoder,
latent normaliser and the profile they were trained with.

:func:`generate_volume`: read and preprocess the X-ray, embed it, sample the two
half-volume latents (even and odd slices; one joint sample or two, by the profile's layout),
decode them slice by slice, interleave, map [−1, 1] back to HU (−100…900) and write a
NIfTI whose array axes (z, y, x) are inferior→superior, anterior→posterior, right→left
(LPS, identity direction).

The spacing written is nominal: the preprocessing crops the lungs and resizes to
``ct_size``, so the true spacing differs per patient; by default each axis gets
``profile.ct_spacing_mm`` (pass ``spacing_mm`` to override).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xr2ct_lib.data.hu_window import PAPER_WINDOW
from xr2ct_lib.files import write_nifti
from xr2ct_lib.models import halves as H
from xr2ct_lib.models.bundle import (  # noqa: F401 (re-exported: the bundle API)
    BUNDLE_PARTS,
    check_bundle,
    profile_from_dict,
    read_normalizer,
    read_profile,
    write_bundle,
)
from xr2ct_lib.models.diffusion import LatentDiffusion
from xr2ct_lib.utils import default_device


# ------------------------------------------------------------- other modules' entry points
def _cxr_io():
    """``read_cxr``, ``preprocess_cxr`` and ``merge_halves`` from the data package."""
    from xr2ct_lib.data.io import read_cxr
    from xr2ct_lib.data.preprocess import merge_halves, preprocess_cxr

    return read_cxr, preprocess_cxr, merge_halves


def _load_vae(directory: Path):
    from xr2ct_lib.models.vae import load_vae

    return load_vae(directory)


def _load_encoder(directory: Path):
    from xr2ct_lib.models.cxr_encoder import load_encoder

    return load_encoder(directory)


# ----------------------------------------------------------------------------- helpers
def decode_latent_volume(vae, z: torch.Tensor) -> torch.Tensor:
    """Latent (C, D, h, w) → image (D, H, W), decoding the D slices as a batch.

    Uses ``vae.decode_slices`` when it exists, else ``vae.decode`` (a diffusers
    ``AutoencoderKL`` returns an object with ``.sample``); multi-channel output is averaged.
    """
    slices = z.permute(1, 0, 2, 3).contiguous()  # (D, C, h, w)
    fn = getattr(vae, "decode_slices", None) or vae.decode
    out = fn(slices)
    out = getattr(out, "sample", out)
    if out.ndim != 4:
        raise ValueError(f"VAE decode returned shape {tuple(out.shape)}, expected (D, ch, H, W)")
    return out.mean(dim=1)


def read_and_preprocess_cxr(cxr_path: str | Path, size: int) -> torch.Tensor:
    """Read a CXR (DICOM/PNG/JPEG) and preprocess it to (3, S, S); errors name the file."""
    cxr_path = Path(cxr_path)
    if not cxr_path.is_file():
        raise FileNotFoundError(f"chest X-ray {cxr_path} does not exist")
    read_cxr, preprocess_cxr, _ = _cxr_io()
    try:
        img = np.asarray(read_cxr(cxr_path), dtype=np.float32)
    except Exception as e:  # the reader's own error, with the file named
        raise ValueError(f"chest X-ray {cxr_path}: cannot be read ({type(e).__name__}: {e})") from e
    if img.ndim != 2 or min(img.shape) < 8 or not np.isfinite(img).all():
        raise ValueError(
            f"chest X-ray {cxr_path}: expected a finite 2D image, got shape {img.shape}"
        )
    x = torch.as_tensor(np.asarray(preprocess_cxr(img, size), dtype=np.float32))
    if x.shape != (3, size, size):
        raise ValueError(
            f"chest X-ray {cxr_path}: preprocessed to {tuple(x.shape)}, not (3, {size}, {size})"
        )
    return x


# -------------------------------------------------------------------------- generation
@torch.no_grad()
def generate_volume(
    cxr_path: str | Path,
    checkpoint_dir: str | Path,
    out_path: str | Path,
    sampler: str = "ddim",
    steps: int | None = None,
    seed: int = 0,
    guidance_scale: float = 1.0,
    device: str | torch.device | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    progress: bool = True,
) -> Path:
    """Generate a CTPA volume (HU, NIfTI) from one chest X-ray with a model bundle.

    ``sampler`` is "ddpm" (the paper: 1000 steps), "ddim" or "dpm++" (``steps`` default:
    the profile's ``sample_steps_fast``); ``seed`` fixes the noise; ``guidance_scale`` > 1
    applies classifier-free guidance. Input problems raise before any sampling.
    """
    bundle = check_bundle(checkpoint_dir)
    profile = read_profile(bundle)
    normalizer = read_normalizer(bundle)
    x = read_and_preprocess_cxr(cxr_path, profile.cxr_size)
    _, _, merge_halves = _cxr_io()
    device = torch.device(device) if device is not None else default_device()

    encoder = _load_encoder(bundle / "encoder")
    if isinstance(encoder, torch.nn.Module):
        encoder.to(device).eval()
    cond = torch.as_tensor(encoder.embed(x[None].to(device))).float()
    model = LatentDiffusion.from_pretrained(bundle / "denoiser").to(device).eval()
    if cond.shape != (1, model.denoiser.cond_dim):
        raise ValueError(
            f"encoder in {bundle / 'encoder'} gives embeddings of shape {tuple(cond.shape)}, "
            f"the denoiser expects (1, {model.denoiser.cond_dim})"
        )
    if steps is None:
        steps = model.num_train_timesteps if sampler == "ddpm" else profile.sample_steps_fast
    k = H.samples_per_volume(profile.halves)  # 1 joint sample, or the two halves separately
    gen = torch.Generator().manual_seed(int(seed))
    zn = model.sample(
        cond.repeat(k, 1), (k, *profile.diffusion_shape), sampler, steps, guidance_scale, gen,
        progress=progress,
    )  # fmt: skip
    z = normalizer.denormalize(H.from_diffusion(zn, profile.halves, profile.latent_shape[0])[0])
    del model
    vae = _load_vae(bundle / "vae")
    if isinstance(vae, torch.nn.Module):
        vae.to(device).eval()
    halves = [decode_latent_volume(vae, z[i]).float().cpu().numpy() for i in range(2)]
    for h in halves:
        if h.shape != tuple(profile.half_size):
            raise ValueError(f"decoded half has shape {h.shape}, profile says {profile.half_size}")
    vol = np.asarray(merge_halves(halves[0], halves[1]), dtype=np.float32)
    if vol.shape != tuple(profile.ct_size):
        raise ValueError(f"merged volume has shape {vol.shape}, profile says {profile.ct_size}")
    spacing = spacing_mm or (profile.ct_spacing_mm,) * 3
    return write_nifti(Path(out_path), PAPER_WINDOW.to_hu(vol), spacing)
