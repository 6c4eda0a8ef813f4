"""``xr2ct generate``: from a chest X-ray file to a generated CTPA volume (NIfTI).

Reads and preprocesses the X-ray (DICOM/PNG/JPEG) exactly as the cohort preparation does,
runs :class:`~xr2ct_lib.models.pipeline.XRay2CTPAPipeline` (the bundle's provenance is
checked first) and writes the volume in HU (the training window, −100…900) as a NIfTI
whose array axes (z, y, x) are inferior→superior, anterior→posterior, right→left (LPS,
identity direction). With the same bundle, X-ray and seed it writes the volume the book
generated for that patient, bit for bit (the book records each patient's seed).

The spacing written is nominal: the preprocessing crops the lungs and resizes to
``ct_size``, so the true spacing differs per patient; by default each axis gets
``profile.ct_spacing_mm`` (pass ``spacing_mm`` to override).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xr2ct_lib.files import write_nifti
from xr2ct_lib.models.bundle import check_bundle
from xr2ct_lib.models.pipeline import XRay2CTPAPipeline
from xr2ct_lib.utils import default_device


def read_and_preprocess_cxr(cxr_path: str | Path, size: int) -> torch.Tensor:
    """Read a CXR (DICOM/PNG/JPEG) and preprocess it to (3, S, S); errors name the file."""
    from xr2ct_lib.data.io import read_cxr
    from xr2ct_lib.data.preprocess import preprocess_cxr

    cxr_path = Path(cxr_path)
    if not cxr_path.is_file():
        raise FileNotFoundError(f"chest X-ray {cxr_path} does not exist")
    try:
        img = read_cxr(cxr_path)
    except Exception as e:  # the reader's own error, with the file named
        raise ValueError(f"chest X-ray {cxr_path}: cannot be read ({type(e).__name__}: {e})") from e
    arr = np.asarray(img)
    if arr.ndim != 2 or min(arr.shape) < 8 or not np.isfinite(arr).all():
        raise ValueError(
            f"chest X-ray {cxr_path}: expected a finite 2D image, got shape {arr.shape}"
        )
    x = torch.as_tensor(np.asarray(preprocess_cxr(img, size), dtype=np.float32))
    if x.shape != (3, size, size):
        raise ValueError(
            f"chest X-ray {cxr_path}: preprocessed to {tuple(x.shape)}, not (3, {size}, {size})"
        )
    return x


@torch.no_grad()
def generate_volume(
    cxr_path: str | Path,
    checkpoint_dir: str | Path,
    out_path: str | Path,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    guidance_scale: float = 1.0,
    device: str | torch.device | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    progress: bool = True,
    lora: str | Path | None = None,
) -> Path:
    """Generate a CTPA volume (HU, NIfTI) from one chest X-ray with a model bundle.

    ``sampler`` "ddpm" (the paper: every training timestep), "ddim" or "dpm++" and
    ``steps`` default to the bundle's profile (``sampler``, ``sample_steps_fast``); ``seed``
    fixes the noise; ``guidance_scale`` > 1 applies classifier-free guidance. Input
    problems (missing or unreadable X-ray, incomplete or stale bundle) raise before any
    sampling. ``lora``: a LoRA adapter folder trained on this bundle (chapter 11).
    """
    bundle = check_bundle(checkpoint_dir)
    from xr2ct_lib.models.bundle import read_profile

    x = read_and_preprocess_cxr(cxr_path, read_profile(bundle).cxr_size)
    pipe = XRay2CTPAPipeline.from_pretrained(bundle)
    if lora is not None:
        pipe.load_lora(lora)
    pipe.to(torch.device(device) if device is not None else default_device())
    out = pipe(x[None], num_inference_steps=steps, guidance_scale=guidance_scale,
               generator=torch.Generator().manual_seed(int(seed)), sampler=sampler,
               output_type="hu", progress=progress)  # fmt: skip
    spacing = spacing_mm or (pipe.profile.ct_spacing_mm,) * 3
    return write_nifti(Path(out_path), out.volumes[0], spacing)
