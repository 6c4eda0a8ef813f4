"""Table 4: how well each compressor reconstructs the test fold's CT volumes."""

from __future__ import annotations

import numpy as np

from xr2ct_lib.eval.metrics import QualityComparison, compare_quality


def reconstructions(model, volumes: np.ndarray) -> np.ndarray:
    """Every (D, H, W) volume through ``model.reconstruct`` (a SliceVAE or the 3D compressor),
    clipped to the CT window [-1, 1] as the generation pipeline clips its decoded volumes
    (a decoder may overshoot the window; the metrics refuse values outside ±1.5)."""
    return np.stack([np.clip(np.asarray(model.reconstruct(v)), -1.0, 1.0) for v in volumes])


def compressor_table(volumes: np.ndarray, compressors: dict) -> QualityComparison:
    """FVD, PSNR, SSIM, LPIPS of each compressor's reconstructions of ``volumes`` (N, D, H, W).

    ``compressors`` maps the row name to a model with ``reconstruct(volume)``.
    """
    target = volumes[:, None]
    return compare_quality(
        {name: (reconstructions(m, volumes)[:, None], target) for name, m in compressors.items()}
    )
