"""``xr2ct generate --cxr``: one chest X-ray file → one generated CTPA volume (NIfTI).

:func:`generate_volume`, and the checks it shares with a cohort
(:mod:`xr2ct_lib.generation.cohort`: a manifest's ``cxr_path`` column or a folder of
X-rays, one NIfTI per patient and an ``index.csv``).
Each X-ray is read and preprocessed exactly as the cohort preparation does, and
:class:`~xr2ct_lib.generation.pipeline.XRay2CTPAPipeline` generates the volume in HU (the
training window, −100…900), written as a NIfTI whose array axes (z, y, x) are
inferior→superior, anterior→posterior, right→left (LPS, identity direction). With the same
bundle, X-ray and seed it writes the volume the book generated for that patient, bit for
bit (the book records each patient's seed; a cohort's seeds are the book's,
:func:`~xr2ct_lib.generation.pipeline.noise_seed`).

Everything that can be checked is checked before any network is loaded or sampled: the
arguments (sampler, steps, guidance, output name and folder, device), the bundle (every
part there, its profile matching its networks, its weights files complete) and every
X-ray. The spacing written is nominal: the preprocessing crops the lungs and resizes to
``ct_size``, so the true spacing differs per patient; each axis gets
``profile.ct_spacing_mm`` unless ``spacing_mm`` is given.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from xr2ct_lib.data.preprocess import read_and_preprocess_cxr
from xr2ct_lib.files import FileError, write_nifti
from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline
from xr2ct_lib.generation.samplers import SAMPLERS, default_steps
from xr2ct_lib.models import bundle as B
from xr2ct_lib.utils import default_device


class GenerateError(ValueError):
    """A generation argument that cannot work (one line, no file to name)."""


def quiet(msg: str) -> None:
    """A ``log`` that says nothing."""


def say(msg: str) -> None:
    """A start-up message on stderr (loading takes a while; the user sees what happens)."""
    print(f">> {msg}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------- checking
def check_out_file(path: str | Path) -> Path:
    """The output NIfTI's path, refused before any work if it cannot be written there."""
    path = Path(path)
    if path.is_dir():
        raise GenerateError(
            f"--out {path}: is a folder; give a file name ending in .nii.gz "
            f"(e.g. {path / 'volume.nii.gz'}), or --out-dir for a cohort"
        )
    if not path.name.endswith((".nii.gz", ".nii")) or path.name in (".nii", ".nii.gz"):
        raise GenerateError(
            f"--out {path}: the volume is written as NIfTI; give a name ending in .nii.gz (or .nii)"
        )
    check_writable_folder(path.parent, "--out")
    return path


def check_writable_folder(folder: Path, option: str) -> None:
    """``folder`` exists and is writable, or can be created (its first existing ancestor)."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise GenerateError(f"{option}: {existing} is a file, so {folder} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GenerateError(f"{option}: {existing} is not writable")


def check_sampling(
    profile, train_timesteps: int, sampler: str | None, steps: int | None, guidance_scale: float
) -> tuple[str, int]:
    """``(sampler, steps)`` with the profile's defaults; a value that cannot work raises."""
    sampler = sampler or profile.sampler
    if sampler not in SAMPLERS:
        raise GenerateError(f"--sampler {sampler}: choose one of {', '.join(SAMPLERS)}")
    if steps is None:
        steps = default_steps(sampler, train_timesteps, profile.sample_steps_fast)
    if not 1 <= int(steps) <= train_timesteps:
        raise GenerateError(
            f"--steps {steps}: must be between 1 and {train_timesteps} (the timesteps the "
            "bundle was trained with)"
        )
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise GenerateError(
            f"--guidance {guidance_scale}: must be a finite number ≥ 0 "
            "(1 is plain conditional sampling)"
        )
    return sampler, int(steps)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto": a GPU when there is one; a named device must exist."""
    if device is None or str(device) == "auto":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise GenerateError(
            f"--device {device}: not a device name (cpu, cuda, cuda:1, mps, auto)"
        ) from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GenerateError(
                f"--device {device}: PyTorch sees no CUDA GPU on this machine "
                "(torch.cuda.is_available() is False); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GenerateError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise GenerateError(f"--device {device}: MPS is not available on this machine")
    return dev


def check_bundle_for_generation(checkpoint_dir: str | Path):
    """``(bundle, profile, train_timesteps)`` after every check that reads no weights."""
    bundle = B.check_bundle(checkpoint_dir)
    B.check_provenance(bundle)
    profile = B.check_consistency(bundle)
    f = bundle / "scheduler" / B.SCHEDULER_CONFIG
    timesteps = profile.diffusion_steps
    if f.is_file():
        from xr2ct_lib.checkpoint import read_json

        timesteps = int(read_json(f).get("num_train_timesteps", timesteps))
    return bundle, profile, timesteps


def load_pipeline(
    bundle: Path,
    device: torch.device,
    allow_download: bool | None,
    log: Callable[[str], None],
    lora: Path | None = None,
) -> XRay2CTPAPipeline:
    t0 = time.perf_counter()
    log(f"loading the networks of {B.show(bundle)}")
    pipe = XRay2CTPAPipeline.from_pretrained(bundle, allow_download=allow_download)
    if lora is not None:
        log(f"applying the LoRA adapters in {lora}")
        pipe.load_lora(lora)
    pipe.to(device)
    log(f"loaded in {time.perf_counter() - t0:.1f} s; generating on {device}")
    return pipe


def check_finite(volume: np.ndarray, bundle: Path, guidance_scale: float) -> np.ndarray:
    """The generated volume, refused when any voxel is NaN or infinite (nothing written)."""
    bad = int(np.size(volume) - np.isfinite(volume).sum())
    if bad:
        raise GenerateError(
            f"{B.show(bundle)}: generated a volume with {bad} of {np.size(volume)} voxels NaN "
            f"or infinite: the bundle's weights are damaged (copy it again or retrain)"
            + (f", or --guidance {guidance_scale:g} is too large" if guidance_scale != 1 else "")
            + "; nothing written"
        )
    return volume


def describe_bundle(bundle: Path, profile) -> str:
    """One line: the bundle, its profile and volume size, the patients it trained on."""
    prov = B.read_provenance(bundle) or {}
    cohort = prov.get("cohort", {})
    n = cohort.get("train_patients") or cohort.get("patients")
    trained = f", trained on {n} patients" if n else ""
    return f"bundle {B.show(bundle)} (profile {profile.name}, {profile.ct_size} volumes{trained})"


# ------------------------------------------------------------------------ one X-ray
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
    allow_download: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Generate a CTPA volume (HU, NIfTI) from one chest X-ray with a model bundle.

    ``sampler`` "ddpm" (the paper: every training timestep), "ddim" or "dpm++" and
    ``steps`` default to the bundle's profile (``sampler``, ``sample_steps_fast``); ``seed``
    fixes the noise; ``guidance_scale`` > 1 applies classifier-free guidance. Every input
    problem raises before any network is loaded; ``log`` receives start-up messages.
    ``lora``: a LoRA adapter folder trained on this bundle (chapter 11).
    """
    log = log or quiet
    out_path = check_out_file(out_path)
    if lora is not None:
        from xr2ct_lib.models.lora import read_lora_config

        try:
            read_lora_config(lora)
        except FileNotFoundError as e:
            raise FileError(lora, f"not a LoRA adapter folder ({e})") from None
    dev = resolve_device(device)
    bundle, profile, timesteps = check_bundle_for_generation(checkpoint_dir)
    sampler, steps = check_sampling(profile, timesteps, sampler, steps, guidance_scale)
    x = read_and_preprocess_cxr(cxr_path, profile.cxr_size)
    log(f"{describe_bundle(bundle, profile)}; {sampler}, {steps} steps, seed {seed}")
    pipe = load_pipeline(bundle, dev, allow_download, log, lora)
    out = pipe(
        x[None],
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(int(seed)),
        sampler=sampler,
        output_type="hu",
        progress=progress,
    )
    spacing = spacing_mm or (pipe.profile.ct_spacing_mm,) * 3
    return write_nifti(out_path, check_finite(out.volumes[0], bundle, guidance_scale), spacing)
