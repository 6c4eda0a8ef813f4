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

from xr2ct_lib.checkpoint import (
    load_checkpoint,
    read_json,
    replace_dir,
    save_checkpoint,
    unprefixed,
)
from xr2ct_lib.config import REPO_ROOT, Profile
from xr2ct_lib.data.io import DataError
from xr2ct_lib.files import atomic_write_text, current_umask, sha256_file
from xr2ct_lib.models.normalizer import LatentNormalizer

BUNDLE_PARTS = ("profile.json", "normalizer.json", "denoiser", "vae", "encoder")
PROVENANCE = "provenance.json"
LOSS_CURVE = "loss_curve.csv"
SCHEDULER_CONFIG = "scheduler_config.json"
WEIGHTS_SHA256 = "weights_sha256"  # provenance: relative path -> sha256 of every weights file
# the profile fields that say how to sample, not what was trained: for a built-in profile
# they come from xr2ct_lib.config (one source of truth: `xr2ct generate --help` shows them)
SAMPLING = ("sampler", "sample_steps_fast", "ddpm_steps")
# Profile fields a bundle's networks depend on: a mismatch makes the bundle unusable
SHAPE_FIELDS = (
    "ct_size", "cxr_size", "vae_channels", "vae_latent_channels", "cxr_embed_dim",
    "unet_channels", "halves", "prediction_type", "diffusion_steps",
)  # fmt: skip


_DEFAULTED = {f.name for f in dataclasses.fields(Profile)
              if f.default is not dataclasses.MISSING}  # fmt: skip


class StaleBundleError(RuntimeError):
    """A bundle trained for another cohort generator version or another profile."""


class BundleError(DataError):
    """A bundle file that cannot be used: damaged, or not matching the rest of the bundle."""


def profile_from_dict(d: dict, source: str | Path = "profile.json") -> Profile:
    """A :class:`Profile` from its JSON form (lists back to tuples; unknown keys dropped).

    Fields added to :class:`Profile` after the JSON was written (training settings such as
    learning rates, never a network's shape) come from the built-in profile of that name,
    and so do the sampling defaults (``SAMPLING``), whatever the file says.
    A file without a field the networks depend on (``SHAPE_FIELDS`` without a default) is
    refused with a :class:`BundleError` naming ``source``, as is any other invalid profile.
    """
    from xr2ct_lib.config import PROFILES

    known = {f.name for f in dataclasses.fields(Profile)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
    missing = [k for k in ("name", *SHAPE_FIELDS) if k not in values and k not in _DEFAULTED]
    if missing:
        raise BundleError(source, f"missing profile field(s) {', '.join(missing)}")
    base = PROFILES.get(values.get("name"))
    if base is not None:
        values = {**dataclasses.asdict(base), **values}
        values.update({f: getattr(base, f) for f in SAMPLING})
    try:
        return Profile(**values)
    except (TypeError, ValueError) as e:
        raise BundleError(source, f"not a valid profile ({e})") from e


def show(path: Path) -> str:
    """A path as users typed it: relative to the repository when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------ reading
def _whole(low: int = 1):
    return (f"a whole number ≥ {low}", lambda v: type(v) is int and v >= low)


def _whole_list(n: int | None = None):
    what = f"a list of {n} whole numbers ≥ 1" if n else "a list of whole numbers ≥ 1"
    return (what, lambda v: isinstance(v, list) and len(v) == (n or len(v)) > 0
            and all(type(x) is int and x >= 1 for x in v))  # fmt: skip


def _or_null(rule):
    return (f"{rule[0]} or null", lambda v: v is None or rule[1](v))


_NUMBER = ("a number", lambda v: type(v) in (int, float))
_TEXT = ("a string", lambda v: isinstance(v, str))
_BOOL = ("true or false", lambda v: isinstance(v, bool))
# the fields of each config a network is built from: JSON type and range
SCHEMAS = {
    "denoiser": {
        "in_channels": _whole(), "channels": _whole_list(), "cond_dim": _whole(),
        "attention_head_dim": _whole(), "conv_kernel": _whole_list(3),
        "num_res_blocks": _whole(), "label_embed_dim": _whole(),
        "cond_drop_prob": ("a number in 0–1", lambda v: type(v) in (int, float) and 0 <= v <= 1),
        "num_classes": _or_null(_whole()), "time_embed_dim": _or_null(_whole()),
    },
    "scheduler": {
        "num_train_timesteps": _whole(), "beta_start": _NUMBER, "beta_end": _NUMBER,
        "beta_schedule": _TEXT, "prediction_type": _TEXT, "clip_sample": _BOOL,
    },
    "vae": {
        "in_channels": _whole(), "out_channels": _whole(), "latent_channels": _whole(),
        "block_out_channels": _whole_list(), "layers_per_block": _whole(),
        "norm_num_groups": _whole(), "sample_size": _whole(),
    },
    "encoder": {"embed_dim": _whole(), "width": _whole(), "in_size": _whole(), "source": _TEXT},
}  # fmt: skip


def check_schema(config: dict, part: str, source: str | Path) -> None:
    """Refuse a config whose fields have the wrong JSON type or range (``SCHEMAS[part]``),
    with a :class:`BundleError` naming the file, the field, what is expected and found."""
    for field, (expected, ok) in SCHEMAS[part].items():
        if field in config and not ok(config[field]):
            found = json.dumps(config[field])
            raise BundleError(source, f"{field}: expected {expected}, found {found}")


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
    f = Path(bundle_dir) / "profile.json"
    return profile_from_dict(read_json(f), f)


def _config(bundle_dir: Path, part: str) -> dict:
    f = bundle_dir / part / "config.json"
    if not f.is_file():
        raise BundleError(f, "missing: the bundle is incomplete")
    return read_json(f)


def check_consistency(bundle_dir: str | Path, profile: Profile | None = None) -> Profile:
    """The bundle's profile, after checking that it describes the bundle's networks.

    Compares ``profile.json`` with the configs of the denoiser, VAE, encoder and noise
    schedule (no weights are read) and every weights file's safetensors header (a truncated
    copy fails here); raises :class:`BundleError` naming the file and the field otherwise.
    """
    from safetensors import SafetensorError, safe_open

    bundle_dir = check_bundle(bundle_dir)
    p = profile or read_profile(bundle_dir)
    where = bundle_dir / "profile.json"
    problems = []

    def differ(part: str, what: str, weights, field: str, value) -> None:
        if weights is not None and tuple(np_list(weights)) != tuple(np_list(value)):
            problems.append(f"{field} {value} but {part}/config.json has {what} {weights}")

    den = _config(bundle_dir, "denoiser")
    den = den.get("denoiser", den)  # the older layout: denoiser and scheduler in one config
    check_schema(den, "denoiser", bundle_dir / "denoiser" / "config.json")
    sched = bundle_dir / "scheduler" / SCHEDULER_CONFIG
    if sched.is_file():
        check_schema(read_json(sched), "scheduler", sched)
    differ("denoiser", "in_channels", den.get("in_channels"), "diffusion channels",
           p.diffusion_shape[0])  # fmt: skip
    differ("denoiser", "channels", den.get("channels"), "unet_channels", p.unet_channels)
    differ("denoiser", "cond_dim", den.get("cond_dim"), "cxr_embed_dim", p.cxr_embed_dim)
    vae = _config(bundle_dir, "vae")
    ae = vae.get("autoencoder", {})
    check_schema(ae if isinstance(ae, dict) else {}, "vae", bundle_dir / "vae" / "config.json")
    differ("vae", "block_out_channels", ae.get("block_out_channels"), "vae_channels",
           p.vae_channels)  # fmt: skip
    differ("vae", "latent_channels", ae.get("latent_channels"), "vae_latent_channels",
           p.vae_latent_channels)  # fmt: skip
    if vae.get("kind", "standin") == "standin":  # the stand-in is built for the CT's slices
        differ("vae", "sample_size", ae.get("sample_size"), "ct_size height", p.ct_size[1])
    enc = _config(bundle_dir, "encoder")
    check_schema(enc, "encoder", bundle_dir / "encoder" / "config.json")
    if enc.get("kind") == "standin":
        differ("encoder", "embed_dim", enc.get("embed_dim"), "cxr_embed_dim", p.cxr_embed_dim)
        differ("encoder", "in_size", enc.get("in_size"), "cxr_size", p.cxr_size)
    if problems:
        raise BundleError(where, f"does not describe the bundle's weights ({'; '.join(problems)}): "
                          "the profile and the weights come from different trainings")  # fmt: skip
    check_weights(bundle_dir)
    for part in ("denoiser", "vae", "encoder"):
        f = bundle_dir / part / "model.safetensors"
        if f.is_file():
            try:
                with safe_open(str(f), "pt"):
                    pass
            except SafetensorError as e:
                size = f.stat().st_size
                raise BundleError(f, f"not a complete safetensors file ({size} bytes; {e}): "
                                  "truncated or damaged, copy it again") from e  # fmt: skip
    return p


def weights_sha256(bundle_dir: Path) -> dict[str, str]:
    """The sha256 of every weights file of a bundle, by path relative to it."""
    return {str(f.relative_to(bundle_dir)): sha256_file(f)
            for f in sorted(bundle_dir.rglob("*.safetensors"))}  # fmt: skip


def check_weights(bundle_dir: Path) -> None:
    """Every weights file whose sha256 the provenance records must still have it (a copy
    with a few bytes changed parses as safetensors but generates garbage)."""
    recorded = (read_provenance(bundle_dir) or {}).get(WEIGHTS_SHA256) or {}
    for name, digest in recorded.items():
        f = bundle_dir / name
        if not f.is_file():
            raise BundleError(f, f"missing (listed in {PROVENANCE}): the bundle is incomplete")
        if sha256_file(f) != digest:
            raise BundleError(f, f"sha256 differs from the one {PROVENANCE} records: the "
                              "file is damaged or was changed; copy the bundle again")  # fmt: skip


def np_list(v):
    """A config value as a flat list (JSON lists and tuples compare equal)."""
    return list(v) if isinstance(v, list | tuple) else [v]


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
    try:
        denoiser.load_state_dict(tensors)
    except RuntimeError as e:  # weights of another architecture than config.json says
        first = str(e).strip().splitlines()[-1].strip()
        raise BundleError(bundle_dir / "denoiser" / "model.safetensors",
                          f"does not match denoiser/config.json ({first})") from e  # fmt: skip
    f = bundle_dir / "scheduler" / SCHEDULER_CONFIG
    if not f.is_file():
        raise FileNotFoundError(
            f"model bundle {bundle_dir} is missing scheduler/{SCHEDULER_CONFIG}"
        )
    return denoiser.eval(), DDPMScheduler.from_config(read_json(f))


def read_provenance(bundle_dir: str | Path) -> dict | None:
    f = Path(bundle_dir) / PROVENANCE
    return read_json(f) if f.is_file() else None


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
    trained_on = (prov or {}).get("cohort", {}).get("generator_version")
    simulated = (prov or {}).get("cohort", {}).get("simulated", True)
    retrain = (
        f"run `make weights PROFILE={pname}` to retrain"
        if simulated  # the embedded cohort's; a user's own is retrained with `xr2ct train`
        else f"retrain it with `xr2ct train --profile {pname}`, or use the profile it was "
        "trained for"
    )
    if prov is None:
        raise StaleBundleError(f"{name} has no {PROVENANCE}: {retrain}")
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
            provenance = {**provenance, WEIGHTS_SHA256: weights_sha256(tmp)}
            atomic_write_text(tmp / PROVENANCE, json.dumps(provenance, indent=2))
        if loss_curve is not None:
            atomic_write_text(tmp / LOSS_CURVE, loss_curve.to_csv(index=False))
        os.chmod(tmp, 0o777 & ~current_umask())
        replace_dir(tmp, bundle_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return bundle_dir
