"""LPIPS of generated volumes: a 2D perceptual distance on slices of the three planes.

The real LPIPS (AlexNet/VGG backbone + learned heads) is looked up locally
(:func:`xr2ct_lib.models.lpips_net.find_lpips`); otherwise pass a
:class:`~xr2ct_lib.eval.standins.FeatureNet` stand-in and the result is named
``"LPIPS-standin"``, never ``"LPIPS"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xr2ct_lib.eval.metric_result import MetricResult
from xr2ct_lib.eval.standins import FeatureNet
from xr2ct_lib.eval.volume_input import VolumeLike, pair_volumes
from xr2ct_lib.utils import module_device, progress

PLANES = ("axial", "coronal", "sagittal")

_NO_LPIPS = (
    "LPIPS needs a feature network and no LPIPS weights were found. Either convert the "
    "torchvision backbone and lpips heads to safetensors (see xr2ct_lib/models/lpips_net.py) "
    "into ~/.cache/xr2ct/weights or $XR2CT_LPIPS_DIR, or pass net=FeatureNet(name, module, "
    "description) as a stand-in (reported as 'LPIPS-standin')."
)


def _standin_distance(module: Callable) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """LPIPS without learned heads: unit-normalised squared feature difference, space-averaged."""
    from xr2ct_lib.models.lpips_net import unit_normalize

    def as_list(f: Any) -> list[torch.Tensor]:
        fs = list(f) if isinstance(f, list | tuple) else [f]
        return [t if t.ndim == 4 else t.reshape(t.shape[0], -1, 1, 1) for t in fs]

    def dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0])
        for fx, fy in zip(as_list(module(x)), as_list(module(y)), strict=True):
            d = (unit_normalize(fx) - unit_normalize(fy)) ** 2
            total = total + d.sum(dim=1).mean(dim=(1, 2))
        return total

    return dist


def resolve_lpips_net(net: Any) -> tuple[str, Callable, str, int, torch.device]:
    from xr2ct_lib.models.lpips_net import LPIPSNet, find_lpips, load_lpips

    if net is None:
        paths = find_lpips()
        if paths is None:
            raise RuntimeError(_NO_LPIPS)
        net = load_lpips(*paths)
    if isinstance(net, LPIPSNet):
        name = "LPIPS" if net.source else "LPIPS-standin"
        return name, net, net.describe(), 3, module_device(net)
    if isinstance(net, FeatureNet):
        dist = _standin_distance(net.module)
        return "LPIPS-standin", dist, net.description, net.in_channels, module_device(net.module)
    raise TypeError(f"lpips net must be None, an LPIPSNet or a FeatureNet, got {net!r}")


def _slice_indices(n: int, max_slices: int | None) -> np.ndarray:
    if max_slices is None or n <= max_slices:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_slices).round().astype(int))


def plane_slices(vol: torch.Tensor, plane: str, max_slices: int | None) -> torch.Tensor:
    """Slices ``(S, 1, h, w)`` of one volume ``(1, D, H, W)`` in a plane (evenly subsampled)."""
    axis = {"axial": 1, "coronal": 2, "sagittal": 3}[plane]
    idx = torch.as_tensor(_slice_indices(vol.shape[axis], max_slices))
    return vol.index_select(axis, idx).movedim(axis, 0)


@torch.no_grad()
def lpips(
    pred: VolumeLike,
    target: VolumeLike,
    net: Any = None,
    max_slices_per_plane: int | None = 16,
    planes: Sequence[str] = PLANES,
    resize_to: int | None = None,
    batch_size: int = 32,
    clip: bool = True,
) -> MetricResult:
    """Per-patient LPIPS: 2D distance on slices of the axial, coronal and sagittal planes.

    Each plane contributes up to ``max_slices_per_plane`` evenly spaced slices (None: all);
    the patient's value is the mean over planes of the mean over slices. Slices are repeated
    to the network's channels and optionally resized to ``resize_to`` px (AlexNet needs >= 32).
    ``net=None`` loads local LPIPS weights; a :class:`FeatureNet` stand-in gives
    ``"LPIPS-standin"`` (unit-normalised feature differences, no learned heads).
    """
    name, dist, desc, channels, device = resolve_lpips_net(net)
    bad = set(planes) - set(PLANES)
    if bad:
        raise ValueError(f"unknown planes {sorted(bad)}; use {PLANES}")
    p, t = pair_volumes(pred, target, clip)
    values = []
    for i in progress(range(len(p)), desc="LPIPS", leave=False):
        plane_means = []
        for plane in planes:
            xs = plane_slices(p[i], plane, max_slices_per_plane)
            ys = plane_slices(t[i], plane, max_slices_per_plane)
            ds = []
            for j in range(0, len(xs), batch_size):
                x, y = (s[j : j + batch_size].to(device) for s in (xs, ys))
                if resize_to is not None:
                    x, y = (
                        F.interpolate(s, size=(resize_to, resize_to), mode="bilinear")
                        for s in (x, y)
                    )
                x, y = x.expand(-1, channels, -1, -1), y.expand(-1, channels, -1, -1)
                ds.append(dist(x, y).double().cpu())
            plane_means.append(float(torch.cat(ds).mean()))
        values.append(float(np.mean(plane_means)))
    return MetricResult(
        name,
        np.array(values),
        desc,
        extra={"planes": tuple(planes), "max_slices_per_plane": max_slices_per_plane},
    )
