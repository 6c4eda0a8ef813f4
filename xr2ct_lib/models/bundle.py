"""A generation bundle on disk: what it holds, how it is written, and when it is refused.

::

    bundle/
      profile.json       the Profile the networks were trained with (sizes, halves layout)
      normalizer.json    the latent min–max constants (:class:`LatentNormalizer`)
      denoiser/          the denoiser's weights (EMA) + constructor config (safetensors + JSON)
      scheduler/         the noise schedule (diffusers ``scheduler_config.json``)
      vae/               the slice-wise 2D VAE (xr2ct_lib.models.vae.load_vae)
      encoder/           the CXR encoder (xr2ct_lib.models.cxr_encoder.load_encoder)
      provenance.json    shipped bundles: how they were trained (command, code commit,
                         cohort generator version, manifest sha256, steps, time, machine,
                         final losses, held-out folds)
      loss_curve.csv     shipped bundles: every training step's loss, per part

Weights may be stored as float16 (shipped bundles, to stay small); the loaders copy them
into float32 modules (``load_state_dict`` converts). A bundle whose provenance names
another cohort generator version or another profile is refused with one line saying what
differs and how to retrain (:func:`check_provenance`). Bundles written before the
scheduler had its own folder (``denoiser/config.json`` holding ``denoiser`` and
``scheduler``) are still read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from xr2ct_lib.checkpoint import load_checkpoint, replace_dir, save_checkpoint, unprefixed
from xr2ct_lib.config import REPO_ROOT, Profile
from xr2ct_lib.files import atomic_write_text, current_umask
from xr2ct_lib.models.latents import LatentNormalizer

BUNDLE_PARTS = ("profile.json", "normalizer.json", "denoiser", "vae", "encoder")
PROVENANCE = "provenance.json"
LOSS_CURVE = "loss_curve.csv"
SCHEDULER_CONFIG = "scheduler_config.json"
# Profile fields a bundle's networks depend on: a mismatch makes the bundle unusable
SHAPE_FIELDS = (
    "ct_size", "cxr_size", "vae_channels", "vae_latent_channels", "cxr_embed_dim",
    "unet_channels", "halves", "prediction_type", "diffusion_steps",
)  # fmt: skip


class StaleBundleError(RuntimeError):
    """A bundle trained for another cohort generator version or another profile."""


def profile_from_dict(d: dict) -> Profile:
    """A :class:`Profile` from its JSON form (lists back to tuples; unknown keys dropped).

    Fields added to :class:`Profile` after the JSON was written (training settings such as
    learning rates, never a network's shape) come from the built-in profile of that name.
    """
    from xr2ct_lib.config import PROFILES

    known = {f.name for f in dataclasses.fields(Profile)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
    base = PROFILES.get(values.get("name"))
    if base is not None:
        values = {**dataclasses.asdict(base), **values}
    return Profile(**values)


def show(path: Path) -> str:
    """A path as users typed it: relative to the repository when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------ reading
def check_bundle(bundle_dir: str | Path) -> Path:
    """The bundle directory, after checking that every part is there."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise FileNotFoundError(f"model bundle {bundle_dir} does not exist")
    missing = [p for p in BUNDLE_PARTS if not (bundle_dir / p).exists()]
    if missing:
        raise FileNotFoundError(f"model bundle {bundle_dir} is missing {', '.join(missing)}")
    return bundle_dir


def read_profile(bundle_dir: str | Path) -> Profile:
    return profile_from_dict(json.loads((Path(bundle_dir) / "profile.json").read_text()))


def read_normalizer(bundle_dir: str | Path) -> LatentNormalizer:
    return LatentNormalizer.load(Path(bundle_dir) / "normalizer.json")


def read_denoiser(bundle_dir: str | Path):
    """``(denoiser, scheduler)`` of a bundle (float32 weights whatever the stored dtype)."""
    from diffusers import DDPMScheduler

    from xr2ct_lib.models.denoiser import LatentDenoiser3D

    bundle_dir = Path(bundle_dir)
    tensors, cfg = load_checkpoint(bundle_dir / "denoiser")
    if "denoiser" in cfg and "scheduler" in cfg:  # the older layout: both in one config
        from xr2ct_lib.models.diffusion import noise_scheduler

        denoiser = LatentDenoiser3D.from_config(cfg["denoiser"])
        denoiser.load_state_dict(unprefixed("denoiser", tensors))
        return denoiser.eval(), noise_scheduler(**cfg["scheduler"])
    denoiser = LatentDenoiser3D.from_config(cfg)
    denoiser.load_state_dict(tensors)
    f = bundle_dir / "scheduler" / SCHEDULER_CONFIG
    if not f.is_file():
        raise FileNotFoundError(
            f"model bundle {bundle_dir} is missing scheduler/{SCHEDULER_CONFIG}"
        )
    return denoiser.eval(), DDPMScheduler.from_config(json.loads(f.read_text()))


def read_provenance(bundle_dir: str | Path) -> dict | None:
    f = Path(bundle_dir) / PROVENANCE
    return json.loads(f.read_text()) if f.is_file() else None


def check_provenance(
    bundle_dir: str | Path, profile: Profile | None = None, generator_version: str | None = None
) -> dict:
    """The bundle's provenance, if it was trained on this cohort generator and ``profile``.

    Raises :class:`StaleBundleError` with one line naming the difference otherwise (or when
    the bundle has no provenance). The generator version matters only for bundles trained
    on simulated patients; ``generator_version`` defaults to the current
    ``xr2ct_lib.data.phantom.GENERATOR_VERSION``; ``profile`` None skips the profile check.
    """
    if generator_version is None:
        from xr2ct_lib.data.phantom import GENERATOR_VERSION as generator_version
    bundle_dir = check_bundle(bundle_dir)
    name = show(bundle_dir)
    prov = read_provenance(bundle_dir)
    pname = profile.name if profile is not None else (prov or {}).get("profile", "<profile>")
    retrain = f"run `make weights PROFILE={pname}` to retrain"
    if prov is None:
        raise StaleBundleError(f"{name} has no {PROVENANCE}: {retrain}")
    trained_on = prov.get("cohort", {}).get("generator_version")
    simulated = prov.get("cohort", {}).get("simulated", True)
    if simulated and trained_on != generator_version:
        raise StaleBundleError(
            f"{name} was trained on cohort {trained_on}, this code builds "
            f"{generator_version}: {retrain}"
        )
    if profile is None:
        return prov
    if prov.get("profile") != profile.name:
        raise StaleBundleError(
            f"{name} was trained for profile {prov.get('profile')}, this run is profile "
            f"{profile.name}: {retrain}"
        )
    stored = dataclasses.asdict(read_profile(bundle_dir))
    current = dataclasses.asdict(profile)
    differ = [f"{k} {stored[k]} → {current[k]}" for k in SHAPE_FIELDS if stored[k] != current[k]]
    if differ:
        raise StaleBundleError(
            f"{name} was trained with another {profile.name} profile ({'; '.join(differ)}): "
            f"{retrain}"
        )
    return prov


FINGERPRINTED = ("normalizer.json", "denoiser", "scheduler", "vae", "encoder")
_fingerprints: dict[tuple, str] = {}


def fingerprint(bundle_dir: str | Path) -> str:
    """A short sha256 over the bundle's weights and configs (for cache keys).

    Remembered per (file, size, mtime), so asking again costs a few ``stat`` calls.
    """
    root = Path(bundle_dir).resolve()
    files = []
    for part in FINGERPRINTED:
        p = root / part
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file() and not f.name.startswith("."):
                st = f.stat()
                files.append((str(f.relative_to(root)), st.st_size, st.st_mtime_ns))
    memo = (str(root), tuple(files))
    if memo not in _fingerprints:
        h = hashlib.sha256()
        for name, _, _ in files:
            h.update(name.encode())
            h.update(hashlib.sha256((root / name).read_bytes()).digest())
        _fingerprints[memo] = h.hexdigest()[:16]
    return _fingerprints[memo]


# ------------------------------------------------------------------------------ writing
def _save_part(obj, target: Path) -> None:
    if isinstance(obj, str | Path):
        shutil.copytree(obj, target)
        return
    for name in ("save", "save_pretrained"):
        if hasattr(obj, name):
            getattr(obj, name)(target)
            return
    raise TypeError(f"cannot save {type(obj).__name__} into {target}: no save()/save_pretrained()")


def _to_dtype(part: Path, dtype: torch.dtype) -> None:
    """Rewrite a saved part's floating-point tensors in ``dtype`` (config unchanged)."""
    if not (part / "model.safetensors").is_file():
        return
    tensors, config = load_checkpoint(part)
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    save_checkpoint(part, tensors, config)


def write_bundle(
    bundle_dir: str | Path,
    denoiser,
    scheduler,
    profile: Profile,
    normalizer: dict | LatentNormalizer,
    vae,
    encoder,
    dtype: torch.dtype | None = None,
    provenance: dict | None = None,
    loss_curve=None,
) -> Path:
    """Assemble a model bundle under a temporary name, then swap it into place.

    ``denoiser`` is a :class:`LatentDenoiser3D` (its current weights are saved: load the EMA
    weights first), ``scheduler`` the training noise scheduler; ``vae`` and ``encoder`` are
    saved directories (copied) or objects with ``save(dir)``; ``normalizer`` a
    :class:`LatentNormalizer` or ``{"min", "max"}``. ``dtype`` (e.g. ``torch.float16``)
    converts the stored weights; ``provenance`` and ``loss_curve`` (a DataFrame) are written
    beside them. An existing bundle is replaced atomically (:func:`replace_dir`).
    """
    if not isinstance(normalizer, LatentNormalizer):
        normalizer = LatentNormalizer.from_dict(dict(normalizer))
    bundle_dir = Path(bundle_dir)
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=bundle_dir.parent, prefix=f".{bundle_dir.name}."))
    try:
        atomic_write_text(tmp / "profile.json", json.dumps(dataclasses.asdict(profile), indent=2))
        normalizer.save(tmp / "normalizer.json")
        denoiser.save(tmp / "denoiser")
        atomic_write_text(tmp / "scheduler" / SCHEDULER_CONFIG, scheduler.to_json_string())
        _save_part(vae, tmp / "vae")
        _save_part(encoder, tmp / "encoder")
        if dtype is not None:
            for part in ("denoiser", "vae", "encoder"):
                _to_dtype(tmp / part, dtype)
        if provenance is not None:
            atomic_write_text(tmp / PROVENANCE, json.dumps(provenance, indent=2))
        if loss_curve is not None:
            atomic_write_text(tmp / LOSS_CURVE, loss_curve.to_csv(index=False))
        os.chmod(tmp, 0o777 & ~current_umask())
        replace_dir(tmp, bundle_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return bundle_dir
