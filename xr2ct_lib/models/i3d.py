"""Inception-I3D (Carreira & Zisserman 2017), the feature network of the Fréchet video distance.

The module layout and parameter names follow the ``pytorch-i3d`` port (piergiaj) as vendored by
VideoGPT/TATS, whose ``i3d_pretrained_400.pt`` (Kinetics-400, converted from the TF-Hub model)
is what FVD implementations load. Its state-dict keys (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_mean``, ``logits.conv3d.bias``...) load unchanged into
:class:`InceptionI3d`.

The library never unpickles. Convert the public file once, where you have it::

    import torch
    from safetensors.torch import save_file

    sd = torch.load("i3d_pretrained_400.pt", map_location="cpu", weights_only=True)
    sd = {k.removeprefix("module."): v.contiguous() for k, v in sd.items()}
    save_file(sd, "i3d_400.safetensors")

and put ``i3d_400.safetensors`` in ``~/.cache/xr2ct/weights/`` or point ``XR2CT_I3D_WEIGHTS``
at it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

I3D_ENV = "XR2CT_I3D_WEIGHTS"
I3D_DEFAULT_PATH = Path("~/.cache/xr2ct/weights/i3d_400.safetensors")


def _same_pad(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """TF 'SAME' padding for (T, H, W), in F.pad order (W front/back, H, T)."""
    pads: list[int] = []
    for s, k, st in zip(reversed(size), reversed(kernel), reversed(stride), strict=True):
        total = max(k - st, 0) if s % st == 0 else max(k - s % st, 0)
        pads += [total // 2, total - total // 2]
    return pads


class Unit3D(nn.Module):
    """Conv3d with TF 'SAME' padding, optional BatchNorm (eps 1e-5, momentum 1e-3) and ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] = (1, 1, 1),
        stride: Sequence[int] = (1, 1, 1),
        activation: bool = True,
        use_batch_norm: bool = True,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.activation = activation
        self.conv3d = nn.Conv3d(
            in_channels, out_channels, self.kernel_size, self.stride, padding=0, bias=use_bias
        )
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.001) if use_batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_pad(x.shape[2:], self.kernel_size, self.stride))
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.MaxPool3d):
    """MaxPool3d with TF 'SAME' zero padding (as in the port: zeros, applied after ReLU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, _same_pad(x.shape[2:], self.kernel_size, self.stride)))


class InceptionModule(nn.Module):
    """Four-branch Inception block; ``out_channels`` = (b0, b1a, b1b, b2a, b2b, b3b)."""

    def __init__(self, in_channels: int, out_channels: Sequence[int]) -> None:
        super().__init__()
        c = list(out_channels)
        self.b0 = Unit3D(in_channels, c[0])
        self.b1a = Unit3D(in_channels, c[1])
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, c[3])
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a = MaxPool3dSame(kernel_size=(3, 3, 3), stride=(1, 1, 1))
        self.b3b = Unit3D(in_channels, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1
        )


class InceptionI3d(nn.Module):
    """Inception-v1 I3D for videos ``(N, in_channels, T, H, W)`` with values in [-1, 1].

    Args:
        num_classes: size of the logits layer (400 for Kinetics-400).
        in_channels: input channels (3 for RGB).
        dropout: dropout before the logits (inactive in eval mode).

    ``forward`` returns the logits averaged over time, ``(N, num_classes)``, as the port does;
    ``extract_features`` returns the 1024-d average-pooled Mixed_5c features, ``(N, 1024)``.
    The final average pool is (2, 7, 7) with stride 1 as in the port (exact for 224 px inputs
    with at least 9 frames); for smaller inputs the window is clipped to the feature map.
    """

    ENDPOINTS = (
        "Conv3d_1a_7x7",
        "MaxPool3d_2a_3x3",
        "Conv3d_2b_1x1",
        "Conv3d_2c_3x3",
        "MaxPool3d_3a_3x3",
        "Mixed_3b",
        "Mixed_3c",
        "MaxPool3d_4a_3x3",
        "Mixed_4b",
        "Mixed_4c",
        "Mixed_4d",
        "Mixed_4e",
        "Mixed_4f",
        "MaxPool3d_5a_2x2",
        "Mixed_5b",
        "Mixed_5c",
    )
    feature_dim = 1024

    def __init__(self, num_classes: int = 400, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        mixed = {
            "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
            "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
            "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
            "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
            "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
            "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
            "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
            "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
            "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
        }
        layers: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": MaxPool3dSame(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            "Conv3d_2b_1x1": Unit3D(64, 64),
            "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
            "MaxPool3d_3a_3x3": MaxPool3dSame(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            "MaxPool3d_4a_3x3": MaxPool3dSame(kernel_size=(3, 3, 3), stride=(2, 2, 2)),
            "MaxPool3d_5a_2x2": MaxPool3dSame(kernel_size=(2, 2, 2), stride=(2, 2, 2)),
        }
        layers.update({k: InceptionModule(cin, cout) for k, (cin, cout) in mixed.items()})
        for name in self.ENDPOINTS:  # registered by name so the port's keys load unchanged
            self.add_module(name, layers[name])
        self.dropout = nn.Dropout(dropout)
        self.logits = Unit3D(
            self.feature_dim, num_classes, activation=False, use_batch_norm=False, use_bias=True
        )

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"I3D expects (N, {self.in_channels}, T, H, W) videos, got {tuple(x.shape)}"
            )
        for name in self.ENDPOINTS:
            x = self._modules[name](x)
        kernel = tuple(min(k, s) for k, s in zip((2, 7, 7), x.shape[2:], strict=True))
        return F.avg_pool3d(x, kernel, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(self.dropout(self._pooled(x)))
        return logits.mean(dim=(2, 3, 4))

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._pooled(x).mean(dim=(2, 3, 4))


class I3DFeatureExtractor(nn.Module):
    """Eval-mode I3D giving FVD features of videos ``(N, 3, T, H, W)`` in [-1, 1].

    Args:
        i3d: the network.
        features: ``"logits"`` (400-d Kinetics logits averaged over time; what the common FVD
            implementations use) or ``"pool"`` (1024-d pooled Mixed_5c features).
        input_size: frames are resized to this square size (224 for the pretrained network).
        input_scale: multiplies the [-1, 1] input; 1.0 is the I3D convention, 0.5 reproduces
            VideoGPT/TATS preprocessing (frames in [-0.5, 0.5]).
        source: where the weights came from (shown in tables).
    """

    def __init__(
        self,
        i3d: InceptionI3d,
        features: str = "logits",
        input_size: int = 224,
        input_scale: float = 1.0,
        source: str | None = None,
    ) -> None:
        super().__init__()
        if features not in ("logits", "pool"):
            raise ValueError(f"features must be 'logits' or 'pool', got {features!r}")
        self.i3d = i3d.eval()
        self.features = features
        self.input_size = input_size
        self.input_scale = input_scale
        self.source = source

    @property
    def feature_dim(self) -> int:
        return self.i3d.num_classes if self.features == "logits" else self.i3d.feature_dim

    def describe(self) -> str:
        what = f"{self.i3d.num_classes}-d logits" if self.features == "logits" else "1024-d pool"
        src = f"weights from {self.source}" if self.source else "random init, no pretrained weights"
        return f"Inception-I3D ({what}, {self.input_size}px frames), {src}"

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        self.i3d.eval()
        video = video * self.input_scale
        if self.features == "logits":
            return self.i3d(video)
        return self.i3d.extract_features(video)


def find_i3d() -> Path | None:
    """Path of local I3D safetensors weights (``$XR2CT_I3D_WEIGHTS`` or the cache), or None."""
    env = os.environ.get(I3D_ENV)
    for p in ([Path(env)] if env else []) + [I3D_DEFAULT_PATH]:
        p = p.expanduser()
        if p.is_file():
            return p
    return None


def read_safetensors(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (a leading ``module.`` from DataParallel is dropped)."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    sd = load_file(str(path))
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def load_state_dict_checked(
    module: nn.Module, sd: dict[str, torch.Tensor], origin: str, what: str
) -> None:
    """Load ``sd`` into ``module``; missing/unexpected/mis-shaped keys raise naming ``origin``."""
    own = module.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(sd) - optional)
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise KeyError(
            f"{origin} is not a {what} state dict: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    bad = [k for k in sd if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise ValueError(
            f"{origin}: {len(bad)} tensors have the wrong shape for {what}, e.g. {k}: "
            f"{tuple(sd[k].shape)} in the file vs {tuple(own[k].shape)} expected"
        )
    sd = {k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    module.load_state_dict(sd, strict=True)


def load_i3d(
    path: str | os.PathLike,
    features: str = "logits",
    num_classes: int = 400,
    input_size: int = 224,
    input_scale: float = 1.0,
) -> I3DFeatureExtractor:
    """Load I3D weights from a safetensors file (see module docstring) into a feature extractor."""
    i3d = InceptionI3d(num_classes=num_classes)
    load_state_dict_checked(i3d, read_safetensors(path, "I3D"), str(path), "Inception-I3D")
    return I3DFeatureExtractor(i3d, features, input_size, input_scale, source=str(path))
