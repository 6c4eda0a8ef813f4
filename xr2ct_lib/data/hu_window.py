"""The CT intensity window of the paper (−100…900 HU) as one object, in the spirit of MONAI's
``ScaleIntensityRange``: clip to the window, map it to [−1, 1], and back to HU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class HUWindow:
    """A HU window ``lo…hi`` and its linear map to ``[−1, 1]``.

    Works on NumPy arrays and torch tensors (the type comes back as it went in).
    """

    lo: float = -100.0
    hi: float = 900.0

    def __post_init__(self):
        if not self.hi > self.lo:
            raise ValueError(f"HU window needs hi > lo, got {self.lo}…{self.hi}")

    def clip(self, hu):
        """Clip HU to the window."""
        return hu.clamp(self.lo, self.hi) if torch.is_tensor(hu) else np.clip(hu, self.lo, self.hi)

    def to_unit(self, hu):
        """HU → [−1, 1] (clipped to the window first)."""
        out = 2.0 * (self.clip(hu) - self.lo) / (self.hi - self.lo) - 1.0
        return out if torch.is_tensor(out) else np.asarray(out, dtype=np.float32)

    def to_hu(self, x):
        """[−1, 1] → HU in the window (values outside [−1, 1] are clipped)."""
        x = x.clamp(-1.0, 1.0) if torch.is_tensor(x) else np.clip(x, -1.0, 1.0)
        out = (x + 1.0) / 2.0 * (self.hi - self.lo) + self.lo
        return out if torch.is_tensor(out) else np.asarray(out, dtype=np.float32)

    def describe(self) -> str:
        return f"{self.lo:g}…{self.hi:g} HU"


PAPER_WINDOW = HUWindow(-100.0, 900.0)
