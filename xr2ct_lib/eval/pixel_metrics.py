"""Pixel metrics of generated volumes, per patient: PSNR and 3D SSIM (MONAI), paper Table 2."""

from __future__ import annotations

import numpy as np
import torch

from xr2ct_lib.eval.volume_input import VolumeLike, pair_volumes


def psnr(
    pred: VolumeLike,
    target: VolumeLike,
    data_range: float = 2.0,
    cap: float | None = None,
    clip: bool = True,
) -> np.ndarray:
    """Per-patient PSNR in dB, ``10 log10(data_range² / MSE)`` over the whole volume.

    Identical volumes give ``inf`` (MSE 0); pass ``cap`` (e.g. 100) to clip such values.
    ``clip`` clamps both volumes to [-1, 1] first (decoded samples can overshoot slightly).
    """
    from monai.metrics import PSNRMetric

    p, t = pair_volumes(pred, target, clip)
    vals = PSNRMetric(max_val=data_range, reduction="none")(p, t)
    out = vals.reshape(-1).double().numpy()
    return np.minimum(out, cap) if cap is not None else out


def ssim(
    pred: VolumeLike,
    target: VolumeLike,
    data_range: float = 2.0,
    win_size: int = 7,
    kernel_type: str = "uniform",
    kernel_sigma: float = 1.5,
    clip: bool = True,
) -> np.ndarray:
    """Per-patient 3D SSIM (MONAI ``SSIMMetric(spatial_dims=3)``), mean over valid windows.

    The default ``win_size=7, kernel_type="uniform"`` is scikit-image's default window
    (population covariances, i.e. ``use_sample_covariance=False``); ``kernel_type="gaussian",
    win_size=11, kernel_sigma=1.5`` is Wang et al.'s Gaussian window. Windows do not cross
    the volume border, so every dimension must be at least ``win_size``.
    """
    from monai.metrics import SSIMMetric

    p, t = pair_volumes(pred, target, clip)
    if min(p.shape[2:]) < win_size:
        raise ValueError(f"SSIM window {win_size} is larger than the volume {tuple(p.shape[2:])}")
    metric = SSIMMetric(
        spatial_dims=3,
        data_range=data_range,
        kernel_type=kernel_type,
        win_size=win_size,
        kernel_sigma=kernel_sigma,
        reduction="none",
    )
    vals = [metric(p[i : i + 1], t[i : i + 1]).reshape(-1) for i in range(p.shape[0])]
    return torch.cat(vals).double().numpy()
