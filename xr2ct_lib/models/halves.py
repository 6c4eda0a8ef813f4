"""The two half volumes in the diffusion model: independent samples or one joint sample.

A CT of D slices is split into its even and its odd slices (two halves of D/2 slices, as
the paper); each half is encoded slice by slice into a latent (C, D/2, h, w), and a
patient's stored latent is (2, C, D/2, h, w). The denoiser sees them in one of two layouts:

- ``independent`` (the paper): every half is a sample of C channels, so a volume is two
  samples drawn separately; nothing ties the halves together but the condition, and a
  weakly trained model leaves stripes between neighbouring slices;
- ``joint`` (this book's default in ``smoke`` and ``workshop``): both halves are the 2C
  channels of one sample, denoised together, so they agree; it halves the sampling cost.

These functions move between the stored layout (N, 2, C, d, h, w) and the diffusion layout
(N·k, C·(2/k), d, h, w), k = 2 (independent) or 1 (joint), on torch tensors or NumPy arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from xr2ct_lib.config import HALVES


def _check(halves: str) -> None:
    if halves not in HALVES:
        raise ValueError(f"halves must be one of {HALVES}, got {halves!r}")


def samples_per_volume(halves: str) -> int:
    """Diffusion samples that make one volume: 2 (independent) or 1 (joint)."""
    _check(halves)
    return 1 if halves == "joint" else 2


def to_diffusion(z, halves: str):
    """Stored latents (N, 2, C, d, h, w) → diffusion samples (N·k, C', d, h, w)."""
    _check(halves)
    if z.ndim != 6 or z.shape[1] != 2:
        raise ValueError(f"latents must be (N, 2, C, d, h, w), got {tuple(z.shape)}")
    n, _, c, *rest = z.shape
    if halves == "joint":
        return z.reshape(n, 2 * c, *rest)
    return z.reshape(2 * n, c, *rest)


def from_diffusion(x, halves: str, channels: int):
    """Diffusion samples (N·k, C', d, h, w) → stored layout (N, 2, C, d, h, w).

    ``channels`` is C, the latent channels of one half (the VAE's).
    """
    _check(halves)
    expect = 2 * channels if halves == "joint" else channels
    if x.ndim != 5 or x.shape[1] != expect:
        raise ValueError(
            f"{halves} diffusion samples must be (B, {expect}, d, h, w), got {tuple(x.shape)}"
        )
    if halves == "independent" and x.shape[0] % 2:
        raise ValueError(f"independent halves come in pairs; got {x.shape[0]} samples")
    return x.reshape(-1, 2, channels, *x.shape[2:])


def per_half(x, halves: str):
    """Diffusion samples → one half per row (N·2, C, d, h, w): what a latent classifier reads.

    The identity for independent halves; a joint sample of 2C channels gives two rows.
    """
    _check(halves)
    if halves == "independent":
        return x
    if x.ndim != 5 or x.shape[1] % 2:
        raise ValueError(f"joint diffusion samples must be (B, 2C, d, h, w), got {tuple(x.shape)}")
    return x.reshape(x.shape[0] * 2, x.shape[1] // 2, *x.shape[2:])


def labels_per_half(label, halves: str):
    """Per-sample labels → per-half labels (the rows of :func:`per_half`)."""
    _check(halves)
    if halves == "independent":
        return label
    return torch.as_tensor(label).reshape(-1).repeat_interleave(2)


def repeat_per_sample(a, halves: str):
    """Per-volume rows (conditions, labels) → one row per diffusion sample."""
    k = samples_per_volume(halves)
    if k == 1:
        return a
    if torch.is_tensor(a):
        return a.repeat_interleave(k, dim=0)
    return np.repeat(np.asarray(a), k, axis=0)
