"""The extra loss terms of X-ray2CTPA: perceptual (λ1), adversarial (λ2), classification (λ3).

The paper's objective is ``L = L1(ε̂, ε) + λ1·LPIPS + λ2·L_adv + λ3·L_cls`` with
λ = (0.01, 0.001, 0.08). The perceptual and adversarial terms compare VAE-decoded slices of
the predicted clean latent x̂0 with those of the true latent x0; the classification term
runs a latent PE classifier on x̂0.

Interfaces, so that this module does not depend on a particular VAE or network:

- ``decode_slices(latents (B, C, D, h, w)) -> slices (N, 1, H, W)``, differentiable;
- ``perceptual(x, y) -> scalar`` on slices (e.g. MONAI ``PerceptualLoss`` or LPIPS);
- ``classifier``: an ``nn.Module`` latent (B, C, D, h, w) → logit (B,), (B, 1) or (B, 2).

The adversarial term trains a MONAI ``PatchDiscriminator(spatial_dims=2)`` on decoded
slices with MONAI's ``PatchAdversarialLoss`` (hinge or least squares).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xr2ct_lib.models.halves import labels_per_half, per_half
from xr2ct_lib.models.normalizer import LatentNormalizer
from xr2ct_lib.models.vae import SliceVAE, decode_slicewise

DecodeFn = Callable[[torch.Tensor], torch.Tensor]
PerceptualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossConfig:
    """Which terms are on, and their weights; a weight of 0 removes the term entirely.

    ``slices_per_volume`` bounds the cost of the decoded-slice terms: that many slices per
    volume (chosen at random each step) are decoded, not all D.
    """

    l1: bool = True
    perceptual: float = 0.01
    adversarial: float = 0.001
    classification: float = 0.08
    adversarial_criterion: str = "hinge"  # or "least_squares"
    slices_per_volume: int = 4

    @classmethod
    def vanilla(cls) -> LossConfig:
        """L1 on the noise only (the "Vanilla" row of Table 3)."""
        return cls(perceptual=0.0, adversarial=0.0, classification=0.0)

    @classmethod
    def full(cls) -> LossConfig:
        """The paper's weighted combination (the "Full" model)."""
        return cls()

    def weights(self) -> dict[str, float]:
        return {
            "perceptual": float(self.perceptual),
            "adversarial": float(self.adversarial),
            "classification": float(self.classification),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def make_discriminator(
    in_channels: int = 1, channels: int = 32, num_layers_d: int = 3
) -> nn.Module:
    """MONAI ``PatchDiscriminator`` for 2D slices (instance norm: no batch statistics)."""
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(
        spatial_dims=2,
        num_layers_d=num_layers_d,
        channels=channels,
        in_channels=in_channels,
        out_channels=1,
        norm="INSTANCE",
    )


def make_decode_slices(decoder, normalizer: LatentNormalizer | dict | None = None) -> DecodeFn:
    """``decode_slices`` for the loss terms: normalised latents (B, C, D, h, w) → slices.

    ``decoder`` is a :class:`~xr2ct_lib.models.vae.SliceVAE` or any 2D decoder
    ``(N, C, h, w) -> (N, ch, H, W)`` (decoded by :func:`~xr2ct_lib.models.vae.decode_slicewise`).
    ``normalizer`` (a :class:`LatentNormalizer` or its ``{"min", "max"}`` dict) undoes the
    latents' min–max map to [−1, 1] before decoding.
    """
    decode_2d = decoder.decode_slices if isinstance(decoder, SliceVAE) else decoder
    if isinstance(normalizer, dict):
        normalizer = LatentNormalizer.from_dict(normalizer)

    def decode_slices(z: torch.Tensor) -> torch.Tensor:
        if normalizer is not None:
            z = normalizer.denormalize(z)
        return decode_slicewise(decode_2d, z)

    return decode_slices


def slice_perceptual(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], resize_to: int | None = None
) -> PerceptualFn:
    """Adapt a 3-channel perceptual network (LPIPS, MONAI ``PerceptualLoss``) to 1-channel.

    ``resize_to`` upsamples small slices bilinearly first (LPIPS-AlexNet needs ≥ 64 px).
    """

    def distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if resize_to is not None and x.shape[-2:] != (resize_to, resize_to):
            x, y = (F.interpolate(t, size=(resize_to, resize_to), mode="bilinear") for t in (x, y))
        if x.shape[1] == 1:
            x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
        return net(x, y).mean()

    return distance


def classification_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """BCE for one logit per volume, cross-entropy for two; rows with label < 0 are ignored."""
    label = label.reshape(-1).to(logits.device)
    keep = label >= 0
    if logits.ndim == 2 and logits.shape[1] == 2:
        return F.cross_entropy(logits[keep].float(), label[keep].long())
    logits = logits.reshape(logits.shape[0], -1)
    if logits.shape[1] != 1:
        raise ValueError(
            f"classifier must return (B,), (B, 1) or (B, 2); got {tuple(logits.shape)}"
        )
    return F.binary_cross_entropy_with_logits(logits[keep, 0].float(), label[keep].float())


class LossTerms:
    """The switchable extra terms and the networks they need.

    A term with weight 0 is neither computed nor reported. A term with a weight but no
    network to compute it raises at construction, naming what is missing. ``halves`` is
    the diffusion layout (:mod:`xr2ct_lib.models.halves`): with ``"joint"`` a sample holds
    both halves (2C channels), which are split into two half latents (C channels) before
    decoding slices and before the classifier, which reads one half.
    """

    def __init__(
        self,
        config: LossConfig = LossConfig(),
        decode_slices: DecodeFn | None = None,
        perceptual: PerceptualFn | None = None,
        discriminator: nn.Module | None = None,
        classifier: nn.Module | None = None,
        halves: str = "independent",
    ) -> None:
        self.config = config
        self.halves = halves
        self.decode_slices = decode_slices
        self.perceptual = perceptual
        self.classifier = classifier
        need = {
            "perceptual": ("decode_slices", decode_slices, "perceptual", perceptual),
            "adversarial": ("decode_slices", decode_slices, "discriminator", discriminator),
        }
        for term, (n1, v1, n2, v2) in need.items():
            if getattr(config, term) and (v1 is None or v2 is None):
                missing = [n for n, v in ((n1, v1), (n2, v2)) if v is None]
                raise ValueError(f"loss term {term!r} has weight > 0 but no {', '.join(missing)}")
        if config.classification and classifier is None:
            raise ValueError("loss term 'classification' has weight > 0 but no classifier")
        if config.adversarial and discriminator is None:
            discriminator = make_discriminator()
        self.discriminator = discriminator
        self._adv = None
        if config.adversarial:
            from monai.losses import PatchAdversarialLoss

            self._adv = PatchAdversarialLoss(criterion=config.adversarial_criterion)
        # frozen: they only steer the generator
        for net in (classifier, perceptual):
            if isinstance(net, nn.Module):
                net.requires_grad_(False).eval()

    @property
    def active(self) -> list[str]:
        return [k for k, w in self.config.weights().items() if w]

    @property
    def needs_slices(self) -> bool:
        return bool(self.config.perceptual or self.config.adversarial)

    def to(self, device: torch.device | str) -> LossTerms:
        for m in (self.discriminator, self.classifier, self.perceptual):
            if isinstance(m, nn.Module):
                m.to(device)
        return self

    # -------------------------------------------------------------------------- slices
    def slices(
        self,
        x0_pred: torch.Tensor,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode the same randomly chosen slices of predicted and true latents."""
        x0_pred, x0 = per_half(x0_pred, self.halves), per_half(x0, self.halves)
        d = x0.shape[2]
        k = min(self.config.slices_per_volume, d)
        idx = torch.randperm(d, generator=generator)[:k].sort().values.to(x0.device)
        fake = self.decode_slices(x0_pred.index_select(2, idx))
        with torch.no_grad():
            real = self.decode_slices(x0.index_select(2, idx))
        return fake, real

    def _disc_logits(self, x: torch.Tensor, frozen: bool) -> torch.Tensor:
        disc = self.discriminator
        if frozen:
            # detached parameters: the generator's gradient reaches the input, not the
            # discriminator (which gets its own loss from ``discriminator_loss``).
            base = getattr(disc, "module", disc)
            params = {k: v.detach() for k, v in base.named_parameters()}
            params.update(dict(base.named_buffers()))
            out = torch.func.functional_call(base, params, (x,))
        else:
            out = disc(x)
        return out[-1] if isinstance(out, list | tuple) else out

    # -------------------------------------------------------------------------- terms
    def generator_terms(
        self,
        x0_pred: torch.Tensor,
        x0: torch.Tensor,
        label: torch.Tensor | None = None,
        slices: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted values of the active terms (keys: perceptual, adversarial, classification)."""
        out: dict[str, torch.Tensor] = {}
        if self.needs_slices:
            fake, real = slices if slices is not None else self.slices(x0_pred, x0)
            if self.config.perceptual:
                out["perceptual"] = self.perceptual(fake, real).mean()
            if self.config.adversarial:
                logits = self._disc_logits(fake, frozen=True)
                out["adversarial"] = self._adv(logits, target_is_real=True, for_discriminator=False)
        if self.config.classification:
            if label is None:
                raise ValueError("the classification term needs PE labels")
            if (torch.as_tensor(label) >= 0).any():
                logits = self.classifier(per_half(x0_pred, self.halves))
                out["classification"] = classification_loss(
                    logits, labels_per_half(label, self.halves)
                )
            else:
                out["classification"] = x0_pred.new_zeros(())
        return out

    def discriminator_loss(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Patch-GAN loss of the discriminator on decoded slices (fake is detached here)."""
        if not self.config.adversarial:
            raise RuntimeError("the adversarial term is off")
        logits = self._disc_logits(torch.cat([fake.detach(), real.detach()]), frozen=False)
        lf, lr = logits[: fake.shape[0]], logits[fake.shape[0] :]
        loss_fake = self._adv(lf, target_is_real=False, for_discriminator=True)
        loss_real = self._adv(lr, target_is_real=True, for_discriminator=True)
        return 0.5 * (loss_fake + loss_real)
