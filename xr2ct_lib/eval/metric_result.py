"""The value of one image-quality metric, with the network that produced it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass
class MetricResult:
    """Values of one metric plus the network that produced them.

    ``values`` are per patient (PSNR, SSIM, LPIPS) or set-level (FVD: one value, or one per
    random subset). ``display_scale`` multiplies values in :meth:`fmt` only (FVD: 1e-3, the
    paper's "×10³" column).
    """

    name: str
    values: np.ndarray
    feature_net: str = ""
    display_scale: float = 1.0
    unit: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.atleast_1d(np.asarray(self.values, dtype=np.float64))

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN for a single value."""
        return float(np.std(self.values, ddof=1)) if self.values.size > 1 else math.nan

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit else self.name

    def fmt(self, digits: int | None = None) -> str:
        """``"0.29 ± 0.22"`` (scaled by ``display_scale``); just ``"0.29"`` for one value.

        ``digits=None``: two decimals, or two significant digits for values below 0.1; below
        0.001, two significant digits in powers of ten (``"9.6 ± 1.2 ×10⁻⁷"``, not
        ``"0.00000096"``).
        """
        m = self.mean * self.display_scale
        a = abs(m)
        if digits is None and 0 < a < 1e-3 and math.isfinite(a):
            e = math.floor(math.log10(a))
            power = f" ×10{str(e).translate(SUPERSCRIPT)}"
            if self.values.size == 1:
                return f"{m / 10**e:.1f}{power}"
            return f"{m / 10**e:.1f} ± {self.std * self.display_scale / 10**e:.1f}{power}"
        if digits is None:
            a = abs(m)
            digits = (
                2 if a >= 0.1 or a == 0 or not math.isfinite(a) else 1 - math.floor(math.log10(a))
            )
        if self.values.size == 1:
            return f"{m:.{digits}f}"
        return f"{m:.{digits}f} ± {self.std * self.display_scale:.{digits}f}"

    def __str__(self) -> str:
        return f"{self.label}: {self.fmt()} [{self.feature_net}]"
