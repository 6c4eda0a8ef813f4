"""The cohort's VAE latents: cached per patient, and their dataset-wide normaliser.

- :class:`LatentNormalizer`: as the reference implementation, the frozen VAE's latents are
  min–max normalised to [−1, 1] with constants computed once on the training patients (one
  pair of floats, or one pair per latent channel); the one copy for the whole library.
- :func:`encode_cohort` writes ``<run_dir>/latents/<pid>.safetensors`` (``z``: the two half
  volumes' latents, (2, C, D/2, h, w)), ``latents/normalizer.json`` and the key they were
  made under, ``latents/encoded.json`` (the VAE's weights and the prepared files);
  :func:`load_latents` and :func:`load_normalizer` read them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from xr2ct_lib.checkpoint import state_sha256
from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.files import atomic_write_text, write_safetensors
from xr2ct_lib.utils import progress, recipe_key

STAMP = "encoded.json"  # the key of the latents in a latent folder


@dataclass(frozen=True)
class LatentNormalizer:
    """``normalize``: raw latent → [−1, 1]; ``denormalize``: back. Per channel when lists.

    Latents are (..., C, D, h, w): per-channel constants broadcast over the last three axes.
    ``extra`` keeps provenance (which VAE, which folds) through the JSON round trip.
    """

    min: float | tuple[float, ...]
    max: float | tuple[float, ...]
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        lo, hi = np.atleast_1d(self.min).astype(float), np.atleast_1d(self.max).astype(float)
        if lo.shape != hi.shape or not np.all(hi > lo):
            raise ValueError(f"latent normaliser needs max > min, got {self.min} and {self.max}")

    def _bounds(self, like):
        lo, hi = self.min, self.max
        if np.ndim(lo) == 0:  # Python floats: the arithmetic stays in the latents' dtype
            return float(lo), float(hi)
        if torch.is_tensor(like):
            lo = torch.as_tensor(lo, dtype=like.dtype, device=like.device)
            hi = torch.as_tensor(hi, dtype=like.dtype, device=like.device)
        else:
            lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        return lo.reshape(-1, 1, 1, 1), hi.reshape(-1, 1, 1, 1)  # one per channel

    def normalize(self, z):
        lo, hi = self._bounds(z)
        out = 2 * (z - lo) / (hi - lo) - 1
        return out if torch.is_tensor(out) else out.astype(np.asarray(z).dtype, copy=False)

    def denormalize(self, z):
        lo, hi = self._bounds(z)
        out = (z + 1) / 2 * (hi - lo) + lo
        return out if torch.is_tensor(out) else out.astype(np.asarray(z).dtype, copy=False)

    @classmethod
    def fit(cls, latents, per_channel: bool = False, **extra) -> LatentNormalizer:
        """Constants from latents (N, ..., C, D, h, w): global or per-channel min and max."""
        z = np.asarray(latents, dtype=np.float64)
        if not per_channel:
            return cls(float(z.min()), float(z.max()), extra)
        axes = tuple(i for i in range(z.ndim) if i != z.ndim - 4)
        return cls(tuple(z.min(axis=axes).tolist()), tuple(z.max(axis=axes).tolist()), extra)

    def to_dict(self) -> dict:
        conv = lambda v: list(v) if isinstance(v, tuple) else float(v)  # noqa: E731
        return {"min": conv(self.min), "max": conv(self.max), **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> LatentNormalizer:
        if not {"min", "max"} <= set(d):
            raise ValueError(f"latent normaliser needs 'min' and 'max', got keys {sorted(d)}")
        conv = lambda v: tuple(float(x) for x in v) if isinstance(v, list) else float(v)  # noqa: E731
        extra = {k: v for k, v in d.items() if k not in ("min", "max")}
        return cls(conv(d["min"]), conv(d["max"]), extra)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> LatentNormalizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"latent normaliser {path} not found")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValueError, TypeError) as e:
            raise ValueError(f"latent normaliser {path}: {e}") from e


# ------------------------------------------------------------------ the cohort's cached latents


def latent_dir(cfg: RunConfig) -> Path:
    """This run's cached latents: of chapter 2's VAE (``weights="trained"``) or of the shipped
    bundle's VAE (``"shipped"``: written by :func:`xr2ct_lib.networks.ensure_latents`)."""
    return cfg.run_dir.joinpath(
        *(("shipped", "latents") if cfg.weights == "shipped" else ("latents",))
    )


def _missing(cfg: RunConfig, what: str) -> str:
    if cfg.weights == "shipped":
        return f"{what}: encode the cohort with the shipped VAE first (networks.ensure_latents)"
    return f"{what}: run notebook 02 first"


def _encoding_key(vae, cohort: PreparedCohort, held_out: list[int]) -> str | None:
    """What a cohort's latents depend on: the VAE's weights and every prepared file (None
    when a file has no key: then they are always encoded again)."""
    keys = [cohort.stored_key(pid) for pid in cohort.ids]
    if any(k is None for k in keys):
        return None
    return recipe_key(
        vae=state_sha256(vae.state_dict()), scaling=getattr(vae, "scaling_factor", None),
        kind=getattr(vae, "kind", None), held_out=held_out,
        patients=list(zip(cohort.ids, map(int, cohort.folds), keys, strict=True)),
    )  # fmt: skip


@torch.no_grad()
def encode_cohort(cfg: RunConfig, vae, cohort: PreparedCohort) -> LatentNormalizer:
    """Encode every patient's two halves with ``vae``; write the latents and the normaliser.

    The normaliser's min/max come from the training folds of the book's main split (the
    profile's ``test_fold`` and its validation fold are left out), as the reference
    implementation fixes dataset-wide constants.

    Latents already written by the same VAE weights from the same prepared files are kept
    (``latents/encoded.json`` holds their key): encoding again under another thread count
    changes the floats' last bits, hence the normaliser, hence the recipe key of every
    diffusion run trained on it (a resumed ``xr2ct train`` would not find its checkpoints).
    """
    p = cfg.profile
    held_out = sorted({p.test_fold, (p.test_fold + 1) % p.n_folds})  # as fold_split's test, val
    d = latent_dir(cfg)
    key = _encoding_key(vae, cohort, held_out)
    stamp = d / STAMP
    if (
        key is not None
        and stamp.is_file()
        and json.loads(stamp.read_text()).get("key") == key
        and (d / "normalizer.json").is_file()
        and all((d / f"{pid}.safetensors").is_file() for pid in cohort.ids)
    ):
        return LatentNormalizer.load(d / "normalizer.json")
    stamp.unlink(missing_ok=True)
    lo, hi = np.inf, -np.inf
    for pid, fold in progress(
        list(zip(cohort.ids, cohort.folds, strict=True)), desc="encode", unit="patient"
    ):
        z = vae.encode_halves(cohort.load(pid)["ct"]).float().cpu()
        write_safetensors(d / f"{pid}.safetensors", {"z": z})
        if fold not in held_out:
            lo, hi = min(lo, float(z.min())), max(hi, float(z.max()))
    norm = LatentNormalizer(lo, hi, {"vae": vae.describe(), "excluded_folds": held_out})
    norm.save(d / "normalizer.json")
    if key is not None:
        atomic_write_text(stamp, json.dumps({"key": key}))
    return norm


def load_normalizer(cfg: RunConfig) -> LatentNormalizer:
    """The normaliser :func:`encode_cohort` wrote (chapter 2), or the shipped bundle's."""
    from xr2ct_lib.networks import ensure_latents

    ensure_latents(cfg)
    f = latent_dir(cfg) / "normalizer.json"
    if not f.is_file():
        raise FileNotFoundError(_missing(cfg, f"{f} not found"))
    return LatentNormalizer.load(f)


def load_latents(
    cfg: RunConfig, ids=None, normalized: bool = False
) -> tuple[list[str], np.ndarray]:
    """``(ids, z)``: ``z`` (N, 2, C, D/2, h, w), in the cohort's order by default.

    ``normalized``: mapped to [−1, 1] with :func:`load_normalizer`'s constants, as float32
    (what the classifiers and the diffusion model read); else the raw VAE latents.
    """
    from xr2ct_lib.networks import ensure_latents

    ensure_latents(cfg)
    if ids is None:
        ids = PreparedCohort(cfg.run_dir).ids
    d = latent_dir(cfg)
    missing = [i for i in ids if not (d / f"{i}.safetensors").is_file()]
    if missing:
        raise FileNotFoundError(_missing(cfg, f"no latents for {missing[:5]} in {d}"))
    z = np.stack([load_file(str(d / f"{i}.safetensors"))["z"].numpy() for i in ids])
    if normalized:
        z = load_normalizer(cfg).normalize(z).astype(np.float32)
    return list(ids), z
