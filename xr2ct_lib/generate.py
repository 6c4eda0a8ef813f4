"""From a chest X-ray file to a generated CTPA volume (NIfTI), with a model bundle.

A model bundle is one directory::

    bundle/
      profile.json      the Profile the models were trained with (sizes: ct_size,
                        cxr_size, latent_shape via vae_channels / vae_latent_channels, ...)
      normalizer.json   {"min": m, "max": M}: dataset-wide latent min–max constants (floats
                        or one per latent channel) that mapped VAE latents to [−1, 1]
      denoiser/         LatentDiffusion.save_pretrained: model.safetensors (EMA weights)
                        + config.json (denoiser constructor args, noise schedule)
      vae/              what xr2ct_lib.models.vae.load_vae reads (slice-wise 2D VAE)
      encoder/          what xr2ct_lib.models.cxr_encoder.load_encoder reads (CXR → 512-d)

:func:`write_bundle` assembles one atomically; :func:`generate_volume` uses it: read and
preprocess the X-ray, embed it, sample the two half-volume latents (even and odd slices),
decode them slice by slice, interleave, map [−1, 1] back to HU (−100…900) and write a
NIfTI whose array axes (z, y, x) are inferior→superior, anterior→posterior, right→left
(LPS, identity direction).

The spacing written is nominal: the preprocessing crops the lungs and resizes to
``ct_size``, so the true spacing differs per patient; by default each axis gets
``profile.ct_spacing_mm`` (pass ``spacing_mm`` to override).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from xr2ct_lib.config import Profile
from xr2ct_lib.models.diffusion import LatentDiffusion
from xr2ct_lib.utils import default_device

HU_MIN, HU_MAX = -100.0, 900.0
BUNDLE_PARTS = ("profile.json", "normalizer.json", "denoiser", "vae", "encoder")


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
def profile_from_dict(d: dict) -> Profile:
    fields = {f.name for f in dataclasses.fields(Profile)}
    return Profile(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}
    )


def denormalize_latents(z: torch.Tensor, normalizer: dict) -> torch.Tensor:
    """Undo the min–max map to [−1, 1]: channel-wise when the constants are lists."""
    lo = torch.as_tensor(normalizer["min"], dtype=z.dtype, device=z.device)
    hi = torch.as_tensor(normalizer["max"], dtype=z.dtype, device=z.device)
    if lo.ndim == 1:  # one per channel; z is (..., C, D, h, w)
        lo, hi = lo.view(-1, 1, 1, 1), hi.view(-1, 1, 1, 1)
    return (z + 1) / 2 * (hi - lo) + lo


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


def to_hu(x: np.ndarray) -> np.ndarray:
    """[−1, 1] → HU in the training window (−100…900)."""
    return (np.clip(x, -1.0, 1.0) + 1.0) / 2.0 * (HU_MAX - HU_MIN) + HU_MIN


def write_nifti(
    volume_zyx: np.ndarray, spacing_zyx: tuple[float, float, float], path: Path
) -> Path:
    """Write (z, y, x) as NIfTI with LPS identity direction, atomically (temp name + rename)."""
    import SimpleITK as sitk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.ascontiguousarray(volume_zyx, dtype=np.float32))
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))  # ITK order is (x, y, z)
    img.SetOrigin((0.0, 0.0, 0.0))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".nii.gz")
    os.close(fd)
    try:
        sitk.WriteImage(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_bundle(bundle_dir: str | Path) -> Path:
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise FileNotFoundError(f"model bundle {bundle_dir} does not exist")
    missing = [p for p in BUNDLE_PARTS if not (bundle_dir / p).exists()]
    if missing:
        raise FileNotFoundError(f"model bundle {bundle_dir} is missing {', '.join(missing)}")
    return bundle_dir


def _save_part(obj, target: Path) -> None:
    if isinstance(obj, str | Path):
        shutil.copytree(obj, target)
        return
    for name in ("save", "save_pretrained"):
        if hasattr(obj, name):
            getattr(obj, name)(target)
            return
    raise TypeError(f"cannot save {type(obj).__name__} into {target}: no save()/save_pretrained()")


def write_bundle(
    bundle_dir: str | Path,
    diffusion: LatentDiffusion,
    profile: Profile,
    normalizer: dict,
    vae,
    encoder,
    use_ema: bool = True,
) -> Path:
    """Assemble a model bundle atomically.

    ``vae`` and ``encoder`` are saved directories (copied) or objects with ``save(dir)``
    / ``save_pretrained(dir)``. ``normalizer`` is ``{"min": ..., "max": ...}``.
    """
    if not {"min", "max"} <= set(normalizer):
        raise ValueError(f"normalizer needs 'min' and 'max', got keys {sorted(normalizer)}")
    bundle_dir = Path(bundle_dir)
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=bundle_dir.parent, prefix=f".{bundle_dir.name}."))
    try:
        (tmp / "profile.json").write_text(json.dumps(dataclasses.asdict(profile), indent=2))
        norm = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in normalizer.items()}
        (tmp / "normalizer.json").write_text(json.dumps(norm, indent=2))
        diffusion.save_pretrained(tmp / "denoiser", use_ema=use_ema)
        _save_part(vae, tmp / "vae")
        _save_part(encoder, tmp / "encoder")
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        os.replace(tmp, bundle_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return bundle_dir


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
    profile = profile_from_dict(json.loads((bundle / "profile.json").read_text()))
    normalizer = json.loads((bundle / "normalizer.json").read_text())
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
    shape = (2, *profile.latent_shape)  # the even-slice and the odd-slice half
    gen = torch.Generator().manual_seed(int(seed))
    z = model.sample(
        cond.repeat(2, 1), shape, sampler, steps, guidance_scale, gen, progress=progress
    )
    z = denormalize_latents(z, normalizer)
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
    return write_nifti(to_hu(vol), spacing, Path(out_path))
