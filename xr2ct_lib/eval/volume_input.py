"""Volumes going into the image-quality metrics: one shape, one scale, checked once.

Every metric takes volumes in [-1, 1] (the pipeline's CT scaling), shaped ``(D, H, W)`` for one
patient or ``(N, 1, D, H, W)`` for a batch, as numpy arrays or torch tensors; axis D is the axial
(z) axis.
"""

from __future__ import annotations

import numpy as np
import torch

VolumeLike = np.ndarray | torch.Tensor


def as_volume_batch(x: VolumeLike, what: str = "volume") -> torch.Tensor:
    """``(D,H,W)`` or ``(N,1,D,H,W)`` numpy/torch -> float32 tensor ``(N,1,D,H,W)``."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to(torch.float32).cpu()
    if t.ndim == 3:
        t = t[None, None]
    elif not (t.ndim == 5 and t.shape[1] == 1):
        raise ValueError(f"{what} must be (D, H, W) or (N, 1, D, H, W), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or inf")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1.5 or hi > 1.5:
        raise ValueError(
            f"{what} values span [{lo:.3g}, {hi:.3g}]; metrics expect volumes scaled to [-1, 1] "
            "(the pipeline's CT scaling), not HU"
        )
    return t


def pair_volumes(
    pred: VolumeLike, target: VolumeLike, clip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both volumes as batches of one shape; clamped to [-1, 1] when ``clip``."""
    p, t = as_volume_batch(pred, "pred"), as_volume_batch(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
    if clip:
        p, t = p.clamp(-1, 1), t.clamp(-1, 1)
    return p, t
