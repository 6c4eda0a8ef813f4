"""Every figure and table states its profile, its data and the networks that made it.

``save_figure`` stamps a provenance line under a matplotlib figure and writes the PNG
to ``<run_dir>/figures``; ``save_table`` writes the CSV to ``<run_dir>/tables`` and
returns a captioned table for the notebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.transforms import offset_copy

from xr2ct_lib.config import RunConfig
from xr2ct_lib.files import atomic_write, atomic_write_text

SIMULATED = "simulated cohort (built from one real contrast CT; not clinical data)"


@dataclass(frozen=True)
class Provenance:
    """What a figure or table was made from."""

    profile: str
    data: str = SIMULATED
    networks: str = "none"

    @classmethod
    def of(cls, cfg: RunConfig, networks: str = "none", data: str | None = None) -> Provenance:
        return cls(profile=cfg.profile.name, data=data or data_description(cfg), networks=networks)

    def line(self) -> str:
        return f"profile: {self.profile} · data: {self.data} · networks: {self.networks}"


def data_description(cfg: RunConfig) -> str:
    """'simulated cohort …' unless the manifest names a real source."""
    try:
        sources = set(pd.read_csv(cfg.manifest, usecols=["source"])["source"].astype(str))
    except (OSError, ValueError):
        return SIMULATED
    real = sorted(s for s in sources if s != "phantom")
    if not real:
        return SIMULATED
    return (
        "real cohort: "
        + ", ".join(real)
        + (" + simulated patients" if "phantom" in sources else "")
    )


def save_figure(
    fig, cfg: RunConfig, name: str, networks: str = "none", data: str | None = None
) -> Path:
    """Add the provenance line to ``fig`` and save it as ``<run_dir>/figures/<name>.png``."""
    prov = Provenance.of(cfg, networks=networks, data=data)
    # below everything already drawn (axis labels included), so it never covers them
    bottom = fig.get_tightbbox().y0 / fig.get_figheight()
    below = offset_copy(fig.transFigure, fig=fig, y=-3, units="points")
    fig.text(0.5, bottom, prov.line(), transform=below, ha="center", va="top", fontsize=7,
             color="0.35")  # fmt: skip
    return atomic_write(
        cfg.run_dir / "figures" / f"{name}.png",
        lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"),
        suffix=".png",
    )


def save_table(
    df: pd.DataFrame,
    cfg: RunConfig,
    name: str,
    caption: str,
    networks: str = "none",
    data: str | None = None,
):
    """Write ``<run_dir>/tables/<name>.csv`` and return a Styler captioned with the provenance
    (numbers to 3 decimals; p-values, columns named ``p`` or ``p …``, to 2 significant digits,
    so that 3.9e-08 does not read 0.000)."""
    prov = Provenance.of(cfg, networks=networks, data=data)
    path = cfg.run_dir / "tables" / f"{name}.csv"
    atomic_write_text(path, df.to_csv(index=not isinstance(df.index, pd.RangeIndex)))
    p_cols = [c for c in df.columns if str(c) == "p" or str(c).startswith("p ")]
    return (
        df.style.set_caption(f"{caption}<br><small>{prov.line()}</small>")
        .format(precision=3)
        .format(lambda v: f"{v:.2g}" if isinstance(v, float | np.floating) else v, subset=p_cols)
    )
