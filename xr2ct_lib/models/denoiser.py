"""The 3D latent denoiser: a video-diffusion style U-Net over slice-wise VAE latents.

Input and output are latents of shape (B, C, D, h, w): C latent channels, D slices (the
"frames" of a video), h×w the latent of one slice. As in the reference implementation
(medicaldiffusion's ``Unet3D``):

- ResNet blocks of 3D convolutions whose normalised activations get a scale and shift from
  an embedding vector (FiLM);
- the embedding is the concatenation of the sinusoidal timestep embedding (after an MLP),
  the 512-d CXR embedding and, optionally, a learned PE-label embedding, so the condition
  reaches every ResNet block at every level; with ``cond_embed_type="projection"`` the CXR
  embedding is first standardised with statistics of the training embeddings and passed
  through an MLP (diffusers' ``class_embed_type="projection"``), so that features of very
  different scales (unit-norm trunk features beside finding probabilities) all move the
  blocks' scale and shift;
- when classifier-free guidance drops the condition, a learned null embedding (and a null
  label) takes its place;
- factorised attention: spatial self-attention among the h·w positions of each slice, then
  temporal self-attention among the D slices at each position (with a learned relative
  position bias).

Downsampling and upsampling act on h and w only (stride (1, 2, 2)); the slice axis D keeps
its length at every level, like the reference, so D need not be a power of two.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import nn

from xr2ct_lib.checkpoint import load_checkpoint, save_checkpoint
from xr2ct_lib.models.configured import ConfiguredModule


def _groups(channels: int, max_groups: int = 8) -> int:
    return math.gcd(channels, max_groups)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock3D(nn.Module):
    """GroupNorm–SiLU–Conv3d ×2 with a scale–shift from the embedding, plus a skip path.

    ``kernel`` (1, 3, 3) convolves within slices only, as the reference's blocks do (the
    slices then exchange information through temporal attention); (3, 3, 3) also across.
    """

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, kernel: Sequence[int] = (3, 3, 3)
    ) -> None:
        super().__init__()
        kernel = tuple(int(k) for k in kernel)
        pad = tuple(k // 2 for k in kernel)
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv3d(in_ch, out_ch, kernel, padding=pad)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.conv2 = nn.Conv3d(out_ch, out_ch, kernel, padding=pad)
        self.skip = nn.Conv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


class _Attention(nn.Module):
    """Pre-norm multi-head self-attention over a token axis, with a residual connection."""

    def __init__(self, channels: int, head_dim: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim) if channels % head_dim == 0 else 1
        # per-token LayerNorm over channels, so each slice (or column) is attended to
        # independently of the others, as in the reference's PreNorm
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def attend(self, tokens: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (N, L, C) → (N, L, C)."""
        n, length, c = tokens.shape
        q, k, v = self.qkv(tokens).reshape(n, length, 3, self.heads, c // self.heads).unbind(2)
        q, k, v = (a.transpose(1, 2) for a in (q, k, v))  # (N, heads, L, hd)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out(o.transpose(1, 2).reshape(n, length, c))


class SpatialAttention(_Attention):
    """Self-attention among the h·w positions of each slice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        t = self.norm(x.permute(0, 2, 3, 4, 1).reshape(b * d, h * w, c))
        o = self.attend(t).reshape(b, d, h, w, c).permute(0, 4, 1, 2, 3)
        return x + o


class TemporalAttention(_Attention):
    """Self-attention among the D slices at each position, with a relative position bias."""

    def __init__(self, channels: int, head_dim: int, max_distance: int = 32) -> None:
        super().__init__(channels, head_dim)
        self.max_distance = max_distance
        self.rel_bias = nn.Embedding(2 * max_distance + 1, self.heads)
        nn.init.zeros_(self.rel_bias.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        pos = torch.arange(d, device=x.device)
        rel = (pos[None, :] - pos[:, None]).clamp(-self.max_distance, self.max_distance)
        bias = self.rel_bias(rel + self.max_distance).permute(2, 0, 1)[None]  # (1, H, D, D)
        t = self.norm(x.permute(0, 3, 4, 2, 1).reshape(b * h * w, d, c))
        o = self.attend(t, bias.to(t.dtype)).reshape(b, h, w, d, c).permute(0, 4, 3, 1, 2)
        return x + o


class FactorisedAttention(nn.Module):
    """Spatial attention within slices, then temporal attention across slices."""

    def __init__(self, channels: int, head_dim: int) -> None:
        super().__init__()
        self.spatial = SpatialAttention(channels, head_dim)
        self.temporal = TemporalAttention(channels, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.spatial(x))


class _Level(nn.Module):
    def __init__(self, blocks: list[ResBlock3D], attn: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = attn if attn is not None else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, emb)
        return self.attn(x)


class LatentDenoiser3D(ConfiguredModule):
    """Denoising 3D U-Net over latents (B, C, D, h, w), conditioned on a CXR embedding.

    It predicts what the noise scheduler's ``prediction_type`` says (the noise, the clean
    latent or v). The constructor arguments are recorded once by diffusers'
    ``register_to_config`` (``self.config``) and saved with the weights.

    Args:
        in_channels: latent channels C (the output has as many).
        channels: feature channels per level, e.g. ``profile.unet_channels``; h and w are
            halved between levels (so h, w must be divisible by ``2**(len(channels)-1)``).
        attention_levels: per level, whether to apply factorised spatial + temporal
            attention; default: every level but the first (the middle block always has it).
        num_res_blocks: ResNet blocks per level on the way down (one more on the way up).
        cond_dim: size of the conditioning embedding (512 for BiomedCLIP); 0 or None for a
            purely unconditional model.
        num_classes: if given, a learned PE-label embedding joins the condition (label
            guidance); index ``num_classes`` is the null label.
        cond_embed_type: ``None`` (the reference: the raw embedding joins the timestep
            embedding) or ``"projection"`` (standardised per feature with
            :meth:`set_condition_statistics`, then a two-layer MLP of the same width).
        cond_drop_prob: probability, in training mode when no ``drop_mask`` is passed, of
            replacing the condition by the null embedding (classifier-free guidance).
        attention_head_dim: channels per attention head.
        time_embed_dim: size of the timestep embedding (default 4 × channels[0]).
        conv_kernel: kernel of the ResNet blocks' convolutions: (1, 3, 3) within slices only,
            as the reference's video U-Net (about half the compute), or (3, 3, 3).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        channels: Sequence[int] = (32, 64, 128),
        attention_levels: Sequence[bool] | None = None,
        num_res_blocks: int = 1,
        cond_dim: int | None = 512,
        num_classes: int | None = None,
        cond_drop_prob: float = 0.1,
        cond_embed_type: str | None = None,
        attention_head_dim: int = 32,
        time_embed_dim: int | None = None,
        label_embed_dim: int = 64,
        conv_kernel: Sequence[int] = (3, 3, 3),
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        conv_kernel = tuple(int(k) for k in conv_kernel)
        if attention_levels is None:
            attention_levels = (False,) + (True,) * (len(channels) - 1)
        attention_levels = tuple(bool(a) for a in attention_levels)
        if len(attention_levels) != len(channels):
            raise ValueError(
                f"attention_levels has {len(attention_levels)} entries, channels {len(channels)}"
            )
        self.in_channels = int(in_channels)
        self.base_channels = channels[0]
        self.cond_dim = int(cond_dim or 0)
        self.num_classes = num_classes
        self.cond_drop_prob = float(cond_drop_prob)
        self.downsample_factor = 2 ** (len(channels) - 1)

        t_dim = time_embed_dim or 4 * channels[0]
        self.time_mlp = nn.Sequential(
            nn.Linear(channels[0], t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim)
        )
        emb_dim = t_dim + self.cond_dim
        if cond_embed_type not in (None, "projection"):
            raise ValueError(
                f'cond_embed_type must be None or "projection", got {cond_embed_type!r}'
            )
        self.cond_embed_type = cond_embed_type if self.cond_dim else None
        if self.cond_dim:
            self.null_cond = nn.Parameter(torch.randn(self.cond_dim) * 0.02)
        if self.cond_embed_type == "projection":
            self.register_buffer("cond_shift", torch.zeros(self.cond_dim))
            self.register_buffer("cond_scale", torch.ones(self.cond_dim))
            self.cond_mlp = nn.Sequential(
                nn.Linear(self.cond_dim, self.cond_dim), nn.SiLU(),
                nn.Linear(self.cond_dim, self.cond_dim),
            )  # fmt: skip
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes + 1, label_embed_dim)
            emb_dim += label_embed_dim

        hd = attention_head_dim
        self.init_conv = nn.Conv3d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        prev = channels[0]
        for i, ch in enumerate(channels):
            blocks = [
                ResBlock3D(prev if j == 0 else ch, ch, emb_dim, conv_kernel)
                for j in range(num_res_blocks)
            ]
            attn = FactorisedAttention(ch, hd) if attention_levels[i] else None
            self.down.append(_Level(blocks, attn))
            last = i == len(channels) - 1
            self.downsamplers.append(
                nn.Identity()
                if last
                else nn.Conv3d(ch, ch, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
            )
            prev = ch
        self.mid1 = ResBlock3D(prev, prev, emb_dim, conv_kernel)
        self.mid_attn = FactorisedAttention(prev, hd)
        self.mid2 = ResBlock3D(prev, prev, emb_dim, conv_kernel)
        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i in reversed(range(len(channels))):
            ch = channels[i]
            blocks = [
                ResBlock3D(prev + ch if j == 0 else ch, ch, emb_dim, conv_kernel)
                for j in range(num_res_blocks + 1)
            ]
            attn = FactorisedAttention(ch, hd) if attention_levels[i] else None
            self.up.append(_Level(blocks, attn))
            # upsample to the next (shallower) level's resolution
            self.upsamplers.append(
                nn.Identity()
                if i == 0
                else nn.Conv3d(ch, channels[i - 1], (1, 3, 3), padding=(0, 1, 1))
            )
            prev = ch if i == 0 else channels[i - 1]
        self.out = nn.Sequential(
            nn.GroupNorm(_groups(channels[0]), channels[0]),
            nn.SiLU(),
            nn.Conv3d(channels[0], in_channels, 3, padding=1),
        )

    # ----------------------------------------------------------------------- conditioning
    NEW_FOR_PROJECTION = ("cond_shift", "cond_scale", "cond_mlp.")

    @torch.no_grad()
    def set_condition_statistics(self, embeddings: torch.Tensor, eps: float = 1e-4) -> None:
        """Standardise conditions with the mean and spread of ``embeddings`` (N, cond_dim),
        the training set's; features whose spread is below ``eps`` (the zero padding) become
        0, which also keeps the scales within float16 when a bundle is stored in half."""
        if self.cond_embed_type != "projection":
            raise ValueError("only a denoiser with cond_embed_type='projection' standardises")
        e = torch.as_tensor(embeddings, dtype=torch.float32)
        if e.ndim != 2 or e.shape[1] != self.cond_dim or len(e) < 2:
            raise ValueError(f"embeddings must be (N ≥ 2, {self.cond_dim}), got {tuple(e.shape)}")
        std = e.std(0)
        self.cond_shift.copy_(e.mean(0))
        self.cond_scale.copy_(torch.where(std > eps, 1 / std.clamp_min(eps), 0.0))

    def load_pretrained_state(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load a state dict, allowing only the projection's own tensors to be missing (a
        reference-style denoiser's weights as the start of a projection one); returns them."""
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as e:  # a shape mismatch
            raise ValueError(f"state does not fit this denoiser: {e}") from e
        bad = [k for k in missing if not k.startswith(self.NEW_FOR_PROJECTION)] + unexpected
        if bad or (missing and self.cond_embed_type != "projection"):
            raise ValueError(f"state does not fit this denoiser: {sorted(bad or missing)[:8]}")
        return list(missing)

    def embed(
        self,
        t: torch.Tensor,
        batch: int,
        cond: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
        drop_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The embedding fed to every ResNet block: [time MLP ‖ CXR embedding ‖ label]."""
        device = self.init_conv.weight.device
        t = torch.as_tensor(t, device=device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        parts = [self.time_mlp(timestep_embedding(t, self.base_channels))]
        if drop_mask is None:
            if self.training and self.cond_drop_prob > 0:
                drop_mask = torch.rand(batch, device=device) < self.cond_drop_prob
            else:
                drop_mask = torch.zeros(batch, dtype=torch.bool, device=device)
        drop_mask = torch.as_tensor(drop_mask, dtype=torch.bool, device=device).reshape(batch)
        if self.cond_dim:
            null = self.null_cond.to(parts[0].dtype).expand(batch, -1)
            cond_dropped = drop_mask
            if cond is None:  # every condition dropped; a stand-in still passes the projection
                stand_in = self.cond_shift if self.cond_embed_type == "projection" else null[0]
                cond, cond_dropped = stand_in.expand(batch, -1), torch.ones_like(drop_mask)
            if cond.shape != (batch, self.cond_dim):
                raise ValueError(
                    f"cond must have shape ({batch}, {self.cond_dim}), got {tuple(cond.shape)}"
                )
            # torch.where keeps the null embedding and the projection in the graph even when
            # nothing (or everything) is dropped, so DistributedDataParallel sees every
            # parameter used.
            cond = cond.to(null.dtype)
            if self.cond_embed_type == "projection":
                cond = self.cond_mlp((cond - self.cond_shift) * self.cond_scale)
            c = torch.where(cond_dropped[:, None], null, cond)
            parts.append(c)
        elif cond is not None:
            raise ValueError("this denoiser is unconditional (cond_dim=0) but got a condition")
        if self.num_classes is not None:
            null_idx = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
            if label is None:
                idx = null_idx
            else:
                label = torch.as_tensor(label, device=device).long().reshape(batch)
                if (label >= self.num_classes).any():
                    raise ValueError(f"labels must be < {self.num_classes}, got {label.tolist()}")
                # a negative label means unknown: the null label, as when dropped
                idx = torch.where(drop_mask | (label < 0), null_idx, label)
            parts.append(self.label_emb(idx).to(parts[0].dtype))
        elif label is not None:
            raise ValueError("this denoiser has no label embedding (num_classes=None)")
        return torch.cat(parts, dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
        drop_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The prediction for ``x`` (B, C, D, h, w) at timesteps ``t`` (B,) or scalar.

        ``cond`` (B, cond_dim) is the CXR embedding, ``label`` (B,) the PE label;
        ``drop_mask`` (B,) bool replaces both by their null embeddings where True.
        """
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (B, {self.in_channels}, D, h, w), got {tuple(x.shape)}")
        f = self.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"h and w ({x.shape[-2]}, {x.shape[-1]}) must be divisible by {f}")
        emb = self.embed(t, x.shape[0], cond, label, drop_mask)
        h = self.init_conv(x)
        skips = []
        for level, down in zip(self.down, self.downsamplers, strict=True):
            h = level(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for level, up in zip(self.up, self.upsamplers, strict=True):
            h = level(torch.cat([h, skips.pop()], dim=1), emb)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=(1, 2, 2), mode="nearest"))
        return self.out(h)

    # --------------------------------------------------------------------------- storage
    def save(self, directory: str | Path, state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write weights (``state`` or this module's) + constructor config (safetensors + JSON)."""
        state = self.state_dict() if state is None else state
        return save_checkpoint(directory, state, self.config_dict())

    @classmethod
    def load(cls, directory: str | Path) -> LatentDenoiser3D:
        tensors, config = load_checkpoint(directory)
        model = cls.from_config(config)
        model.load_state_dict(tensors)
        return model

    def extra_repr(self) -> str:
        return json.dumps(self.config_dict())
