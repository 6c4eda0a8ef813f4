"""Feature networks for FVD and LPIPS when the real ones (I3D, LPIPS-AlexNet) are absent.

:class:`FeatureNet` wraps any caller-supplied network; :func:`fvd_net` and :func:`lpips_net`
give the real network when its weights are found locally, else a fixed-seed random one. The
distances a stand-in gives are reproducible and comparable between rows of one table, but
they are not FVD or LPIPS, and are labelled ``FD-standin`` / ``LPIPS-standin`` with the
network's description.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xr2ct_lib.models.i3d import find_i3d, load_i3d
from xr2ct_lib.models.lpips_net import lpips_net  # noqa: F401  (re-exported)


@dataclass
class FeatureNet:
    """A caller-supplied stand-in feature network (results are labelled ``*-standin``).

    Args:
        name: short name, e.g. ``"VAE-encoder"``.
        module: for :func:`fvd`, maps volumes ``(B, in_channels, D, H, W)`` in [-1, 1] to
            features ``(B, ...)`` (flattened per volume); for :func:`lpips`, maps images
            ``(B, in_channels, h, w)`` in [-1, 1] to a feature map ``(B, C, h', w')``, a vector
            ``(B, C)`` or a list of those.
        description: what the network is and where its weights came from (shown in tables).
        in_channels: grey inputs are repeated to this many channels.
    """

    name: str
    module: Callable[[torch.Tensor], Any]
    description: str
    in_channels: int = 1


def random_cnn3d(seed: int = 0, width: int = 16, out_dim: int = 64) -> nn.Module:
    """A small 3D CNN with fixed random weights: (B, 1, D, H, W) → (B, out_dim)."""
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv3d(1, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv3d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv3d(2 * width, out_dim, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )  # fmt: skip
    return net.eval().requires_grad_(False)


def fvd_net(seed: int = 0):
    """I3D when its weights are found locally, else the labelled random 3D CNN."""
    path = find_i3d()
    if path is not None:
        return load_i3d(path)
    return FeatureNet(
        "random-CNN3D",
        random_cnn3d(seed),
        f"stand-in: random 3-layer 3D CNN (seed {seed}), not I3D",
    )
