"""A 3D compressor for the paper's Table 4 comparison (2D VAE vs 3D VQGAN).

MONAI's ``VQVAE`` with ``spatial_dims=3``: the whole volume is downsampled by 4 along every
axis into a grid of codebook vectors. The paper's 3D-VQGAN adds an adversarial term; this
stand-in is trained with L1 + the quantisation loss only, and is labelled as such.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.configuration_utils import register_to_config
from monai.networks.nets import VQVAE

from xr2ct_lib.checkpoint import load_checkpoint, save_checkpoint
from xr2ct_lib.config import Profile
from xr2ct_lib.models.configured import ConfiguredModule


class Compressor3D(ConfiguredModule):
    """A 3D VQ-VAE over whole (D, H, W) volumes in [−1, 1], downsampling by 4 per axis."""

    @register_to_config
    def __init__(
        self,
        channels: tuple[int, int] = (16, 32),
        embedding_dim: int = 16,
        num_embeddings: int = 256,
    ) -> None:
        super().__init__()
        self.net = VQVAE(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            channels=tuple(channels),
            num_res_layers=1,
            num_res_channels=tuple(channels),
            downsample_parameters=((2, 4, 1, 1),) * 2,
            upsample_parameters=((2, 4, 1, 1, 0),) * 2,
            num_embeddings=num_embeddings,
            embedding_dim=embedding_dim,
        )

    @classmethod
    def for_profile(cls, profile: Profile) -> Compressor3D:
        """Latent of the same number of values as the 2D VAE's (two halves together)."""
        c, d, h, w = profile.latent_shape
        total_2d = 2 * c * d * h * w
        dd, hh, ww = (s // 4 for s in profile.ct_size)
        return cls(channels=(16, 32), embedding_dim=max(1, total_2d // (dd * hh * ww)))

    def describe(self) -> str:
        return "in-book 3D VQ-VAE (MONAI VQVAE, spatial_dims=3, trained here; no GAN term)"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, D, H, W) → (reconstruction, quantisation loss)."""
        return self.net(x)

    @torch.no_grad()
    def reconstruct(self, vol) -> torch.Tensor:
        """(D, H, W) → its reconstruction (D, H, W)."""
        p = next(self.parameters())
        x = torch.as_tensor(vol, dtype=p.dtype, device=p.device)[None, None]
        return self.net(x)[0][0, 0]

    def save(self, directory: str | Path) -> Path:
        return save_checkpoint(directory, self.state_dict(), {"kind": "vqvae3d", **self.hparams})


def load_compressor3d(directory: str | Path) -> Compressor3D:
    tensors, cfg = load_checkpoint(directory)
    model = Compressor3D.from_config(cfg)  # {"kind": "vqvae3d", **hparams}
    model.load_state_dict(tensors)
    return model.eval()
