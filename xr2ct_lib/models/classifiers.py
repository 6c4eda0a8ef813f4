"""PE classifiers of Tables 1 and 7.

- :class:`LatentPEClassifier`: a MONAI 3D DenseNet on the normalised VAE latent of a half
  volume (DenseNet121 at the ``paper`` size; fewer dense blocks for the smaller latents).
  The diffusion model's classification loss uses it on its predicted clean latent.
- :class:`SliceLSTMClassifier`: INSPECT-style: a 2D CNN slice encoder trained with slice
  labels, frozen, then an LSTM over the slice features.
- :class:`ClotSegmenter`: a MONAI 2D U-Net on a few adjacent slices that outputs a clot
  probability per pixel (supervised by clot masks); a patient's score pools the voxels
  (:func:`xr2ct_lib.train.clot.score_volumes`).
- :class:`CXRClassifier`: a CNN on the X-ray; :func:`load_radimagenet_resnet50` keeps the
  loading code for the paper's pretrained RadImageNet ResNet-50 (safetensors only).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers.configuration_utils import register_to_config
from monai.networks.nets import DenseNet
from torch import nn

from xr2ct_lib.checkpoint import load_checkpoint, save_checkpoint
from xr2ct_lib.config import Profile
from xr2ct_lib.models.configured import ConfiguredModule


class LatentPEClassifier(ConfiguredModule):
    """PE logit (B, 1) from a normalised latent half (B, C, D, h, w)."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        init_features: int = 64,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        dropout_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.net = DenseNet(
            spatial_dims=3, in_channels=in_channels, out_channels=1,
            init_features=init_features, growth_rate=growth_rate,
            block_config=tuple(block_config), dropout_prob=dropout_prob,
        )  # fmt: skip

    @classmethod
    def for_profile(cls, profile: Profile) -> LatentPEClassifier:
        """DenseNet121 for the paper's 32×32 latents; else as many blocks as the size allows."""
        c, _, h, _ = profile.latent_shape
        if profile.latent_classifier == "densenet121":
            return cls(c)
        n_blocks = max(1, min(4, 1 + int(math.log2(max(h // 4, 1)))))
        return cls(c, init_features=16, growth_rate=8, block_config=(4, 8, 8, 8)[:n_blocks])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class SliceEncoder(nn.Module):
    """2D CNN: a slice (B, 1, H, W) → feature (B, dim); ``slice_logit`` for slice labels."""

    def __init__(self, dim: int = 64, width: int = 16) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, dim]
        layers = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(4, b), nn.SiLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.slice_head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def slice_logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.slice_head(self.features(x))


class SliceLSTMClassifier(ConfiguredModule):
    """Patient logit from a sequence of slice features (B, S, dim) with a bidirectional LSTM."""

    @register_to_config
    def __init__(self, dim: int = 64, hidden: int = 32) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(4 * hidden, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(feats)
        pooled = torch.cat([out.mean(1), out.max(1).values], dim=-1)
        return self.head(pooled)


class ClotSegmenter(ConfiguredModule):
    """Clot logit per pixel (B, 1, H, W) of the middle of 2·context + 1 adjacent slices.

    A small MONAI ``BasicUNet``: the pixel-level target (the clot mask) lets a few dozen
    training patients teach what a filling defect looks like, which a patient label alone
    does not (the book's analogue of INSPECT's slice labels from RSPECT).
    """

    @register_to_config
    def __init__(
        self,
        features: tuple[int, ...] = (8, 8, 16, 16, 16, 8),
        context: int = 1,
        crop: tuple[int, ...] | None = None,
        size: tuple[int, int, int] | None = None,
    ):
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.context = context
        # (D, H, W) of the volumes it was trained on; others are resized to it when read
        self.size = None if size is None else tuple(int(v) for v in size)
        # (z0, z1, y0, y1, x0, x1): the box it reads, where the training folds hold clots
        self.crop = None if crop is None else tuple(int(v) for v in crop)
        self.net = BasicUNet(
            spatial_dims=2, in_channels=2 * context + 1, out_channels=1,
            features=tuple(features), norm=("batch", {}), dropout=0.0,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def topk_score(prob: torch.Tensor, k: int) -> torch.Tensor:
    """Patient score from voxel probabilities (N, ...): the mean of its ``k`` largest."""
    return prob.flatten(1).topk(k, dim=1).values.mean(1)


class CXRClassifier(ConfiguredModule):
    """A small CNN on the X-ray (B, 3, S, S) in [0, 1] → PE logit (B, 1).

    ``findings`` names extra outputs (the pretrained X-ray reader's finding heads,
    :mod:`xr2ct_lib.train.readers.cxr`): :meth:`all_logits` gives the PE logit first, then
    one per finding; ``forward`` gives the PE logit alone.
    """

    @register_to_config
    def __init__(self, width: int = 16, findings: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.findings = tuple(findings)
        chans = [3, width, 2 * width, 4 * width, 8 * width, 8 * width]
        layers = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(4, b), nn.SiLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(chans[-1], 1 + len(findings)))

    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1 + len(findings)): the PE logit, then each finding's."""
        return self.head(self.features(x * 2 - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_logits(x)[:, :1]


def load_radimagenet_resnet50(path: str | Path) -> nn.Module:
    """RadImageNet ResNet-50 (torchvision layout, safetensors) with a new 1-logit head.

    Convert the published checkpoint once to safetensors on a trusted machine; this loader
    never unpickles. The classification head (``fc.*``) is replaced.
    """
    import torchvision
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"RadImageNet ResNet-50 weights not found at {path}: convert the published "
            "checkpoint to safetensors (torchvision resnet50 key names) and pass its path"
        )
    state = {
        k.removeprefix("module.").removeprefix("backbone."): v
        for k, v in load_file(str(path)).items()
    }
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    model = torchvision.models.resnet50(weights=None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
        raise ValueError(f"{path}: not a ResNet-50 state dict (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")  # fmt: skip
    model.fc = nn.Linear(model.fc.in_features, 1)
    return model


_KINDS = {
    "latent": LatentPEClassifier,
    "slice_lstm": SliceLSTMClassifier,
    "cxr": CXRClassifier,
    "clot_segmenter": ClotSegmenter,
}


def save_classifier(model: nn.Module, directory: str | Path, **extra) -> Path:
    kind = next(k for k, c in _KINDS.items() if isinstance(model, c))
    return save_checkpoint(
        directory, model.state_dict(), {"kind": kind, "hparams": model.hparams, **extra}
    )


def load_classifier(directory: str | Path) -> nn.Module:
    tensors, cfg = load_checkpoint(directory)
    if cfg.get("kind") not in _KINDS:
        raise ValueError(f"classifier {directory}: unknown kind {cfg.get('kind')!r}")
    model = _KINDS[cfg["kind"]].from_config(cfg["hparams"])
    model.load_state_dict(tensors)
    return model.eval()


def logits_to_prob(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits.reshape(-1).float())


def fold_model_dir(cfg, k: int, kind: str = "latent_classifier") -> Path:
    """Where the classifier ``kind`` (``latent_classifier`` or ``clot_classifier``) of test
    fold ``k`` is saved."""
    return Path(cfg.run_dir) / "models" / kind / f"fold{k}"
