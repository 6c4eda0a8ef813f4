"""LPIPS (Zhang et al. 2018): a torchvision backbone plus the learned linear heads ("lin" layers).

Matches the ``lpips`` package (v0.1, ``lpips=True``): inputs in [-1, 1] are shifted/scaled by the
ImageNet constants, the backbone's five ReLU stages are unit-normalised over channels, their
squared difference is weighted per channel by a 1x1 conv head, averaged over space and summed
over stages.

The library never unpickles. Convert the public weights once, where you have them::

    import torch
    from safetensors.torch import save_file

    # torchvision backbone (AlexNet: alexnet-owt-7be5be79.pth, VGG16: vgg16-397923af.pth)
    sd = torch.load("alexnet-owt-7be5be79.pth", map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in sd.items() if k.startswith("features.")},
              "lpips_alex_backbone.safetensors")
    # heads from the lpips package: lpips/weights/v0.1/alex.pth (keys lin0.model.1.weight ...)
    heads = torch.load("alex.pth", map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in heads.items()}, "lpips_alex_heads.safetensors")

and put both files in ``~/.cache/xr2ct/weights/`` (or a folder named by ``XR2CT_LPIPS_DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from xr2ct_lib.models.i3d import load_state_dict_checked, read_safetensors

LPIPS_ENV = "XR2CT_LPIPS_DIR"
LPIPS_DEFAULT_DIR = Path("~/.cache/xr2ct/weights")

# (torchvision constructor, slice boundaries in ``features`` ending at relu1..relu5, channels)
_MIN_SIZE = {"alex": 31, "vgg": 16}  # smaller images vanish in the pooling before relu5
_BACKBONES = {
    "alex": ("alexnet", (0, 2, 5, 8, 10, 12), (64, 192, 384, 256, 256)),
    "vgg": ("vgg16", (0, 4, 9, 16, 23, 30), (64, 128, 256, 512, 512)),
}


def _backbone_features(net: str) -> nn.Sequential:
    import torchvision

    return getattr(torchvision.models, _BACKBONES[net][0])(weights=None).features


class LinearHead(nn.Module):
    """One LPIPS head: dropout + 1x1 conv to one channel, no bias (keys ``model.1.weight``)."""

    def __init__(self, channels: int, dropout: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout()] if dropout else [nn.Identity()]
        self.model = nn.Sequential(*layers, nn.Conv2d(channels, 1, 1, bias=False))
        # Until trained heads are loaded: unit weights, i.e. LPIPS's un-learned baseline
        # (sum over channels), so the distance is non-negative like the trained one.
        nn.init.ones_(self.model[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPSNet(nn.Module):
    """LPIPS distance between image batches ``(B, 3, H, W)`` in [-1, 1] -> ``(B,)``.

    Args:
        net: ``"alex"`` or ``"vgg"`` (torchvision AlexNet / VGG16 ``features``).
        source: where the weights came from (shown in tables).
    """

    def __init__(self, net: str = "alex", source: str | None = None) -> None:
        super().__init__()
        if net not in _BACKBONES:
            raise ValueError(f"net must be one of {sorted(_BACKBONES)}, got {net!r}")
        self.net = net
        self.source = source
        self.min_input_size = _MIN_SIZE[net]
        self.features = _backbone_features(net)
        self.bounds = _BACKBONES[net][1]
        for i, c in enumerate(_BACKBONES[net][2]):
            self.add_module(f"lin{i}", LinearHead(c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def backbone_state_keys(self) -> list[str]:
        return [k for k in self.state_dict() if k.startswith("features.")]

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone activations at relu1..relu5 of ImageNet-normalised ``x``."""
        x = (x - self.shift) / self.scale
        out = []
        for a, b in zip(self.bounds[:-1], self.bounds[1:], strict=True):
            x = self.features[a:b](x)
            out.append(x)
        return out

    def describe(self) -> str:
        name = {"alex": "AlexNet", "vgg": "VGG16"}[self.net]
        src = f"weights from {self.source}" if self.source else "random init, no pretrained weights"
        return f"LPIPS v0.1 ({name} features + linear heads), {src}"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two (B, 3, H, W) batches, got {x.shape}, {y.shape}")
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(
                f"LPIPS-{self.net} needs images of at least {self.min_input_size} px, got "
                f"{tuple(x.shape[2:])}; resize them (lpips(..., resize_to=64))"
            )
        total = x.new_zeros(x.shape[0])
        for i, (fx, fy) in enumerate(zip(self.stages(x), self.stages(y), strict=True)):
            d = (unit_normalize(fx) - unit_normalize(fy)) ** 2
            total = total + self._modules[f"lin{i}"](d).mean(dim=(1, 2, 3))
        return total


def unit_normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each spatial feature vector by its L2 norm over channels (as lpips does)."""
    return f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + eps)


def find_lpips(net: str = "alex") -> tuple[Path, Path] | None:
    """Paths (backbone, heads) of local LPIPS safetensors weights, or None when absent.

    Looks for ``lpips_{net}_backbone.safetensors`` and ``lpips_{net}_heads.safetensors`` in
    ``$XR2CT_LPIPS_DIR`` and then ``~/.cache/xr2ct/weights``.
    """
    env = os.environ.get(LPIPS_ENV)
    for d in ([Path(env)] if env else []) + [LPIPS_DEFAULT_DIR]:
        d = d.expanduser()
        b, h = d / f"lpips_{net}_backbone.safetensors", d / f"lpips_{net}_heads.safetensors"
        if b.is_file() and h.is_file():
            return b, h
    return None


def load_lpips(
    backbone_path: str | os.PathLike, heads_path: str | os.PathLike, net: str = "alex"
) -> LPIPSNet:
    """Build :class:`LPIPSNet` from a torchvision ``features.*`` file and an lpips heads file."""
    model = LPIPSNet(net, source=f"{backbone_path} + {heads_path}")
    sd = read_safetensors(backbone_path, f"LPIPS {net} backbone")
    # a full torchvision file also holds classifier.* tensors, which LPIPS does not use
    sd = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
    if not sd:
        raise KeyError(f"{backbone_path} has no 'features.*' tensors (torchvision {net})")
    load_state_dict_checked(model.features, sd, str(backbone_path), f"torchvision {net} features")
    heads = nn.ModuleDict({f"lin{i}": model._modules[f"lin{i}"] for i in range(5)})
    sd = read_safetensors(heads_path, f"LPIPS {net} heads")
    # newer lpips versions also register the heads as ``lins.<i>``; keep one copy
    sd = {("lin" + k[5:] if k.startswith("lins.") else k): v for k, v in sd.items()}
    load_state_dict_checked(heads, sd, str(heads_path), f"LPIPS {net} heads")
    return model.eval()


def lpips_net(seed: int = 0):
    """LPIPS-AlexNet when its weights are found locally, else AlexNet with random weights."""
    paths = find_lpips()
    if paths is not None:
        return load_lpips(*paths)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LPIPSNet("alex")
