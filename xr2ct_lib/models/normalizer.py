"""The latent normaliser: as the reference implementation, the frozen VAE's latents are
min–max normalised to [−1, 1] with constants computed once on the training patients (one
pair of floats, or one pair per latent channel); the one copy for the whole library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xr2ct_lib.files import atomic_write_text


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
