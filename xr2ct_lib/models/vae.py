"""The slice-wise 2D VAE: a diffusers ``AutoencoderKL`` applied to every axial slice.

The paper encodes each CTPA slice with the frozen SD VAE (KL-f8, ``sd-vae-ft-mse``) and
stacks the slice latents into a 3D latent (4×64×32×32 for a 64×256×256 half). Here:

- :func:`load_sd_vae` loads the real SD VAE from a local folder or the Hugging Face cache
  (offline; nothing is downloaded);
- :func:`make_standin_vae` builds the small ``AutoencoderKL`` that the ``smoke`` and
  ``workshop`` profiles train inside the book (:mod:`xr2ct_lib.train.autoencoder`).

Both are wrapped by :class:`SliceVAE`, which maps volumes in [−1, 1] to scaled latents and
back. Latents are the posterior mean (deterministic), times ``scaling_factor``. Decoding
slice by slice has one implementation, :func:`decode_slicewise`, used by the VAE's volume
methods and by the diffusion loss terms.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torch import nn

from xr2ct_lib.checkpoint import load_checkpoint, save_checkpoint
from xr2ct_lib.config import Profile
from xr2ct_lib.data.preprocess import merge_halves, split_halves

SD_VAE_REPO = "stabilityai/sd-vae-ft-mse"


def decode_slicewise(
    decode_2d: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Latents (B, C, D, h, w) → slices (B·D, 1, H, W) through a 2D decoder, slice by slice.

    ``decode_2d`` maps (N, C, h, w) to (N, ch, H, W) or to an object with ``.sample`` (a
    diffusers ``AutoencoderKL.decode``); several output channels are averaged to one.
    ``batch_size`` bounds the slices per call (None: all at once, differentiable).
    """
    if z.ndim != 5:
        raise ValueError(f"expected latents (B, C, D, h, w), got {tuple(z.shape)}")
    b, c, d, h, w = z.shape
    slices = z.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
    step = batch_size or len(slices)
    outs = []
    for i in range(0, len(slices), step):
        out = decode_2d(slices[i : i + step])
        out = getattr(out, "sample", out)
        outs.append(out.mean(dim=1, keepdim=True) if out.shape[1] != 1 else out)
    return torch.cat(outs)


class SliceVAE(nn.Module):
    """Encode/decode (D, H, W) volumes slice by slice with a 2D ``AutoencoderKL``.

    Args:
        autoencoder: the diffusers model; 1-channel (stand-in) or 3-channel (SD VAE: the
            grey slice is repeated and the output channels averaged).
        scaling_factor: multiplies the latents (SD: 0.18215) so they have roughly unit variance.
        kind: ``"standin"`` or ``"sd-vae-ft-mse"``; shown in figure and table provenance.
        batch_size: slices per forward pass in the volume methods.
    """

    def __init__(
        self,
        autoencoder: AutoencoderKL,
        scaling_factor: float = 1.0,
        kind: str = "standin",
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.scaling_factor = float(scaling_factor)
        self.kind = kind
        self.batch_size = batch_size

    @property
    def image_channels(self) -> int:
        return int(self.autoencoder.config.in_channels)

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.config.latent_channels)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.autoencoder.config.block_out_channels) - 1)

    def describe(self) -> str:
        if self.kind == "standin":
            return "in-book stand-in VAE (diffusers AutoencoderKL, trained here)"
        return f"{self.kind} (pretrained, frozen)"

    def posterior(self, x: torch.Tensor):
        """The diagonal Gaussian posterior of slices ``(N, 1, H, W)`` in [−1, 1]."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected slices (N, 1, H, W), got {tuple(x.shape)}")
        x = x.expand(-1, self.image_channels, -1, -1)
        return self.autoencoder.encode(x).latent_dist

    def encode_slices(self, x: torch.Tensor) -> torch.Tensor:
        """Slices (N, 1, H, W) → scaled latent means (N, C, h, w)."""
        return self.posterior(x).mean * self.scaling_factor

    def decode_slices(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (N, C, h, w) → slices (N, 1, H, W); differentiable."""
        out = self.autoencoder.decode(z / self.scaling_factor).sample
        return out.mean(dim=1, keepdim=True)

    @torch.no_grad()
    def encode_volume(self, vol) -> torch.Tensor:
        """(D, H, W) in [−1, 1] → latent (C, D, h, w)."""
        p = next(self.parameters())
        v = torch.as_tensor(vol, dtype=p.dtype, device=p.device)
        if v.ndim != 3:
            raise ValueError(f"expected a (D, H, W) volume, got {tuple(v.shape)}")
        n = self.batch_size
        z = torch.cat([self.encode_slices(v[i : i + n, None]) for i in range(0, len(v), n)])
        return z.permute(1, 0, 2, 3).contiguous()

    def encode_halves(self, vol) -> torch.Tensor:
        """(D, H, W) in [−1, 1] → the latents of its two halves (even, odd slices),
        (2, C, D/2, h, w): what the cohort's latent cache and the diffusion model hold."""
        return torch.stack([self.encode_volume(h) for h in split_halves(vol)])

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, D, h, w) → slices (B·D, 1, H, W) in one pass; differentiable."""
        return decode_slicewise(self.decode_slices, z)

    @torch.no_grad()
    def decode_volume(self, z) -> torch.Tensor:
        """Latent (C, D, h, w) → (D, H, W)."""
        p = next(self.parameters())
        z = torch.as_tensor(z, dtype=p.dtype, device=p.device)
        if z.ndim != 4 or z.shape[0] != self.latent_channels:
            raise ValueError(
                f"expected a latent ({self.latent_channels}, D, h, w), got {tuple(z.shape)}"
            )
        return decode_slicewise(self.decode_slices, z[None], self.batch_size)[:, 0]

    @torch.no_grad()
    def reconstruct(self, vol) -> torch.Tensor:
        """A (D, H, W) volume through the VAE: halves → latents → slices → re-interleaved."""
        halves = [
            self.decode_volume(self.encode_volume(h)).cpu().numpy() for h in split_halves(vol)
        ]
        return torch.from_numpy(merge_halves(*halves))

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "scaling_factor": self.scaling_factor,
            "autoencoder": dict(self.autoencoder.config),
        }

    def save(self, directory: str | Path) -> Path:
        """safetensors + JSON config, written atomically."""
        cfg = self.config()
        cfg["autoencoder"] = {k: v for k, v in cfg["autoencoder"].items() if not k.startswith("_")}
        return save_checkpoint(directory, self.autoencoder.state_dict(), cfg)


def make_standin_vae(profile: Profile, scaling_factor: float = 1.0) -> SliceVAE:
    """The small 1-channel ``AutoencoderKL`` of the profile (H, W downsampled 2^(levels−1))."""
    ch = tuple(profile.vae_channels)
    ae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * len(ch),
        up_block_types=("UpDecoderBlock2D",) * len(ch),
        block_out_channels=ch,
        layers_per_block=1,
        latent_channels=profile.vae_latent_channels,
        norm_num_groups=min(8, ch[0]),
        sample_size=profile.ct_size[1],
        scaling_factor=scaling_factor,
    )
    return SliceVAE(ae, scaling_factor=scaling_factor, kind="standin", batch_size=profile.vae_batch)


def load_vae(directory: str | Path) -> SliceVAE:
    """Load a :class:`SliceVAE` saved with :meth:`SliceVAE.save`."""
    tensors, cfg = load_checkpoint(directory)
    ae = AutoencoderKL.from_config(cfg["autoencoder"])
    missing, unexpected = ae.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"VAE checkpoint {directory}: {len(missing)} missing and {len(unexpected)} "
            f"unexpected weights (e.g. {(missing or unexpected)[:3]})"
        )
    return SliceVAE(ae.eval(), cfg["scaling_factor"], cfg.get("kind", "standin"))


def load_sd_vae(path_or_repo: str | Path = SD_VAE_REPO, batch_size: int = 16) -> SliceVAE:
    """The paper's frozen SD VAE from a local folder or the local HF cache, never the network.

    ``path_or_repo`` is a folder holding ``config.json`` + ``diffusion_pytorch_model.safetensors``
    (diffusers layout) or a repo id already in the Hugging Face cache (``HF_HUB_OFFLINE=1``).
    """
    try:
        ae = AutoencoderKL.from_pretrained(
            str(path_or_repo), local_files_only=True, use_safetensors=True
        )
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"SD VAE not found locally at {path_or_repo!s}: download {SD_VAE_REPO} on a machine "
            f"with internet (huggingface-cli download {SD_VAE_REPO}), copy the HF cache here and "
            f"set HF_HUB_OFFLINE=1, or pass the folder ({type(e).__name__}: {e})"
        ) from e
    ae.requires_grad_(False)
    name = (
        "sd-vae-ft-mse"
        if "sd-vae-ft-mse" in str(path_or_repo)
        else f"AutoencoderKL ({path_or_repo})"
    )
    return SliceVAE(ae.eval(), ae.config.scaling_factor, kind=name, batch_size=batch_size)
