"""A generation bundle on disk: what it holds, how it is written, and when it is refused.

::

    bundle/
      profile.json       the Profile the networks were trained with (sizes, halves layout)
      normalizer.json    the latent min–max constants (:class:`LatentNormalizer`)
      denoiser/          diffusion weights (EMA) + config (safetensors + JSON)
      vae/               the slice-wise 2D VAE (xr2ct_lib.models.vae.load_vae)
      encoder/           the CXR encoder (xr2ct_lib.models.cxr_encoder.load_encoder)
      provenance.json    shipped bundles: how they were trained (command, code commit,
                         cohort generator version, manifest sha256, steps, time, machine,
                         final losses, held-out folds)
      loss_curve.csv     shipped bundles: every training step's loss, per part

Weights may be stored as float16 (shipped bundles, to stay small); the loaders copy them
into float32 modules (``load_state_dict`` converts). A bundle whose provenance names
another cohort generator version or another profile is refused with one line saying what
differs and how to retrain (:func:`check_provenance`).
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

from xr2ct_lib.checkpoint import load_checkpoint, save_checkpoint
from xr2ct_lib.config import REPO_ROOT, Profile
from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.models.latents import LatentNormalizer

BUNDLE_PARTS = ("profile.json", "normalizer.json", "denoiser", "vae", "encoder")
PROVENANCE = "provenance.json"
LOSS_CURVE = "loss_curve.csv"
# Profile fields a bundle's networks depend on: a mismatch makes the bundle unusable
SHAPE_FIELDS = (
    "ct_size", "cxr_size", "vae_channels", "vae_latent_channels", "cxr_embed_dim",
    "unet_channels", "halves", "prediction_type", "diffusion_steps",
)  # fmt: skip


class StaleBundleError(RuntimeError):
    """A bundle trained for another cohort generator version or another profile."""


def profile_from_dict(d: dict) -> Profile:
    """A :class:`Profile` from its JSON form (lists back to tuples; unknown keys dropped)."""
    fields = {f.name for f in dataclasses.fields(Profile)}
    return Profile(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}
    )


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


def read_provenance(bundle_dir: str | Path) -> dict | None:
    f = Path(bundle_dir) / PROVENANCE
    return json.loads(f.read_text()) if f.is_file() else None


def check_provenance(
    bundle_dir: str | Path, profile: Profile, generator_version: str | None = None
) -> dict:
    """The bundle's provenance, if it was trained on this cohort generator and profile.

    Raises :class:`StaleBundleError` with one line naming the difference otherwise (or when
    the bundle has no provenance). ``generator_version`` defaults to the current
    ``xr2ct_lib.data.phantom.GENERATOR_VERSION``.
    """
    if generator_version is None:
        from xr2ct_lib.data.phantom import GENERATOR_VERSION as generator_version
    bundle_dir = check_bundle(bundle_dir)
    name = show(bundle_dir)
    retrain = f"run `make weights PROFILE={profile.name}` to retrain"
    prov = read_provenance(bundle_dir)
    if prov is None:
        raise StaleBundleError(f"{name} has no {PROVENANCE}: {retrain}")
    trained_on = prov.get("cohort", {}).get("generator_version")
    if trained_on != generator_version:
        raise StaleBundleError(
            f"{name} was trained on cohort {trained_on}, this code builds "
            f"{generator_version}: {retrain}"
        )
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


def fingerprint(bundle_dir: str | Path, parts=("normalizer.json", "denoiser", "vae", "encoder")):
    """A short sha256 over the bundle's weight files and configs (for cache keys)."""
    h = hashlib.sha256()
    root = Path(bundle_dir)
    for part in parts:
        p = root / part
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file() and not f.name.startswith("."):
                h.update(str(f.relative_to(root)).encode())
                h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def fingerprint_text(*parts: str) -> str:
    """A short sha256 of some strings (recipe keys) for cache keys."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


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
    diffusion,
    profile: Profile,
    normalizer: dict | LatentNormalizer,
    vae,
    encoder,
    use_ema: bool = True,
    dtype: torch.dtype | None = None,
    provenance: dict | None = None,
    loss_curve=None,
) -> Path:
    """Assemble a model bundle under a temporary name, then move it into place.

    ``diffusion`` is a :class:`LatentDiffusion`; ``vae`` and ``encoder`` are saved
    directories (copied) or objects with ``save(dir)`` / ``save_pretrained(dir)``;
    ``normalizer`` a :class:`LatentNormalizer` or ``{"min", "max"}``. ``dtype`` (e.g.
    ``torch.float16``) converts the stored weights; ``provenance`` and ``loss_curve`` (a
    DataFrame) are written beside them. An existing bundle is moved aside, replaced, and
    only then deleted.
    """
    if not isinstance(normalizer, LatentNormalizer):
        normalizer = LatentNormalizer.from_dict(dict(normalizer))
    bundle_dir = Path(bundle_dir)
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=bundle_dir.parent, prefix=f".{bundle_dir.name}."))
    old = None
    try:
        atomic_write_text(tmp / "profile.json", json.dumps(dataclasses.asdict(profile), indent=2))
        normalizer.save(tmp / "normalizer.json")
        diffusion.save_pretrained(tmp / "denoiser", use_ema=use_ema)
        _save_part(vae, tmp / "vae")
        _save_part(encoder, tmp / "encoder")
        if dtype is not None:
            for part in ("denoiser", "vae", "encoder"):
                _to_dtype(tmp / part, dtype)
        if provenance is not None:
            atomic_write_text(tmp / PROVENANCE, json.dumps(provenance, indent=2))
        if loss_curve is not None:
            atomic_write_text(tmp / LOSS_CURVE, loss_curve.to_csv(index=False))
        os.chmod(tmp, 0o755)
        if bundle_dir.exists():
            old = Path(tempfile.mkdtemp(dir=bundle_dir.parent, prefix=f".{bundle_dir.name}.old."))
            os.replace(bundle_dir, old / "bundle")
        os.replace(tmp, bundle_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not bundle_dir.exists():
            os.replace(old / "bundle", bundle_dir)  # put the previous bundle back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return bundle_dir
