"""Image-quality metrics of generated CT volumes (paper Table 2): FVD, PSNR, SSIM, LPIPS.

The one entry point of the notebooks is :func:`quality_table`; the metrics themselves live in

- :mod:`~xr2ct_lib.eval.pixel_metrics`: :func:`psnr`, :func:`ssim` (per patient, MONAI, 3D);
- :mod:`~xr2ct_lib.eval.frechet`: :func:`fvd` and the Fréchet distance it rests on;
- :mod:`~xr2ct_lib.eval.perceptual`: :func:`lpips` on slices of the three planes;
- :mod:`~xr2ct_lib.eval.metric_result`: :class:`MetricResult`, a metric's values and network;
- :mod:`~xr2ct_lib.eval.standins`: :class:`FeatureNet` and the labelled stand-in networks.

They are re-exported here, so ``from xr2ct_lib.eval import metrics as M; M.psnr(...)`` works.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from xr2ct_lib.eval import standins
from xr2ct_lib.eval.frechet import (
    FVD_DISPLAY_SCALE,
    frechet_distance,
    frechet_distance_from_features,
    fvd,
    volume_features,
)
from xr2ct_lib.eval.metric_result import MetricResult
from xr2ct_lib.eval.perceptual import PLANES, lpips, plane_slices
from xr2ct_lib.eval.pixel_metrics import psnr, ssim
from xr2ct_lib.eval.standins import FeatureNet
from xr2ct_lib.eval.volume_input import VolumeLike, as_volume_batch

__all__ = [
    "FVD_DISPLAY_SCALE", "PLANES", "FeatureNet", "MetricResult", "VolumeLike", "as_volume_batch",
    "frechet_distance", "frechet_distance_from_features", "fvd", "lpips", "plane_slices", "psnr",
    "quality_table", "ssim", "volume_features", "QualityComparison", "compare_quality",
]  # fmt: skip

# LPIPS on the book's small slices: AlexNet needs them upsampled; 8 slices per plane keep it quick
BOOK_LPIPS = {"resize_to": 64, "max_slices_per_plane": 8}


def quality_table(
    pred: VolumeLike,
    target: VolumeLike,
    fvd_net: Any = None,
    lpips_net: Any = None,
    metrics: Sequence[str] = ("FVD", "PSNR", "SSIM", "LPIPS"),
    label: str = "generated",
    data_range: float = 2.0,
    lpips_kwargs: dict | None = None,
    fvd_kwargs: dict | None = None,
):
    """One-row table of ``"mean ± std"`` for FVD (×10³), PSNR, SSIM, LPIPS (paper Table 2).

    Column names carry the metric's actual name (``"FD-standin (×10³)"``, ``"LPIPS-standin"``
    when stand-ins were used). ``df.attrs["results"]`` holds the :class:`MetricResult` objects
    and ``df.attrs["feature_nets"]`` which network produced each column.
    """
    unknown = set(metrics) - {"FVD", "PSNR", "SSIM", "LPIPS"}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}")
    results: list[MetricResult] = []
    for m in metrics:
        if m == "FVD":
            results.append(fvd(target, pred, fvd_net, **(fvd_kwargs or {})))
        elif m == "PSNR":
            vals = psnr(pred, target, data_range)
            if np.isinf(vals).any():
                warnings.warn("PSNR is inf for identical volumes; the mean is inf", stacklevel=2)
            results.append(MetricResult("PSNR", vals, "none (pixel metric, dB)"))
        elif m == "SSIM":
            results.append(MetricResult("SSIM", ssim(pred, target, data_range), "none (3D)"))
        else:
            results.append(lpips(pred, target, lpips_net, **(lpips_kwargs or {})))
    df = pd.DataFrame({r.label: [r.fmt()] for r in results}, index=pd.Index([label]))
    df.attrs["results"] = {r.label: r for r in results}
    df.attrs["feature_nets"] = {r.label: r.feature_net for r in results}
    return df


@dataclass
class QualityComparison:
    """Table 2 / Table 4 rows: the table as shown, the values behind it, the networks used."""

    table: pd.DataFrame  # one row per model, "mean ± std" per metric
    results: dict[str, dict[str, MetricResult]]  # row → column label → values
    networks: str  # the feature networks of the FVD and LPIPS columns

    def mean(self, metric: str) -> dict[str, float]:
        """Row → mean of the column whose label starts with ``metric`` (e.g. ``"PSNR"``)."""
        return {
            row: next(r.mean for label, r in cols.items() if label.startswith(metric))
            for row, cols in self.results.items()
        }


def compare_quality(
    rows: dict[str, tuple[VolumeLike, VolumeLike]],
    fvd_net: Any = None,
    lpips_net: Any = None,
    lpips_kwargs: dict | None = None,
) -> QualityComparison:
    """:func:`quality_table` for each ``row name → (pred, target)``, stacked into one table.

    ``fvd_net`` / ``lpips_net`` default to the real I3D / LPIPS when found locally, else the
    labelled stand-ins of :mod:`~xr2ct_lib.eval.standins`; LPIPS runs with :data:`BOOK_LPIPS`.
    """
    fvd_net = standins.fvd_net() if fvd_net is None else fvd_net
    lpips_net = standins.lpips_net() if lpips_net is None else lpips_net
    kw = BOOK_LPIPS if lpips_kwargs is None else lpips_kwargs
    frames = [
        quality_table(pred, target, fvd_net=fvd_net, lpips_net=lpips_net, label=name,
                      lpips_kwargs=kw)
        for name, (pred, target) in rows.items()
    ]  # fmt: skip
    nets = frames[0].attrs["feature_nets"]
    return QualityComparison(
        table=pd.concat([pd.DataFrame(f) for f in frames]),
        results={name: f.attrs["results"] for name, f in zip(rows, frames, strict=True)},
        networks="; ".join(f"{k}: {v}" for k, v in nets.items() if "none" not in v),
    )
