"""Every figure and table states its profile, its data and the networks that made it.

The provenance is kept out of the pixels, where a long line widened every figure and
shrank it at the book's width: ``save_figure`` writes the PNG to ``<run_dir>/figures``
(the line in its PNG metadata) and a ``.provenance.json`` beside it, and displays the
figure with a numbered caption, alt text and the provenance line under it; ``save_table``
writes the CSV to ``<run_dir>/tables`` (tables quoted from the paper to
``<run_dir>/tables/quoted/``), each with its ``.provenance.json``, and returns a table
formatted for reading, its caption above and its provenance below.

In the built book a figure is a MyST ``{figure}`` (numbered, ``:alt:``, ``:name:``) that
MyST-NB renders from the output's ``text/markdown`` (``_config.yml`` gives that format
priority and parses it as MyST); JupyterLab shows the same output's ``text/html``.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from xr2ct_lib.config import REPO_ROOT, RunConfig
from xr2ct_lib.files import atomic_write, atomic_write_text
from xr2ct_lib.utils import Skipped

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


def write_provenance(path: Path, prov: Provenance, caption: str, kind: str, cfg: RunConfig):
    """``<path>.provenance.json`` beside an output file: what it shows and what made it."""
    record = {
        "file": path.name,
        "caption": caption,
        "kind": kind,
        **asdict(prov),
        "seed": cfg.seed,
        "manifest": Path(cfg.manifest).name,
    }
    sidecar = path.with_name(path.stem + ".provenance.json")
    return atomic_write_text(sidecar, json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def _figure_text(fig, take_title: bool = True) -> tuple[str, list[str]]:
    """The figure's suptitle, or the title of its only panel (removed from the figure: it
    becomes the caption), and the titles and axis labels of its panels (for the alt text)."""
    title = ""
    if not take_title:
        pass
    elif getattr(fig, "_suptitle", None) is not None:
        title = fig._suptitle.get_text().strip()
        fig._suptitle.remove()
        fig._suptitle = None
    elif len(fig.axes) == 1 and fig.axes[0].get_title().strip():
        title = fig.axes[0].get_title().strip()  # one panel: its title is the figure's
        fig.axes[0].set_title("")
    panels = []
    for ax in fig.axes:
        bits = [ax.get_title().strip(), ax.get_xlabel().strip(), ax.get_ylabel().strip()]
        text = " / ".join(b for b in bits if b)
        if text and text not in panels:
            panels.append(text)
    return title, panels


def alt_text(caption: str, panels: list[str], limit: int = 12) -> str:
    """Alt text: the caption, then what the panels show (their titles and axis labels)."""
    if not panels:
        return caption
    shown = "; ".join(panels[:limit]) + ("; …" if len(panels) > limit else "")
    return f"{caption}. Panels: {shown}"


@dataclass(frozen=True)
class FigureOutput:
    """A saved figure as a notebook output: a numbered MyST figure for the book
    (``text/markdown``), an HTML figure for JupyterLab (``text/html``), the caption as text."""

    path: Path
    name: str
    caption: str
    alt: str
    provenance: str

    def book_path(self) -> str | None:
        """The PNG as Sphinx finds it from any page: ``/`` + its path in the repository
        (Sphinx reads a leading ``/`` as the source root); None outside the repository."""
        try:
            return "/" + self.path.resolve().relative_to(REPO_ROOT.resolve()).as_posix()
        except ValueError:
            return None

    def _repr_mimebundle_(self, include=None, exclude=None):
        cap, prov, alt = html.escape(self.caption), html.escape(self.provenance), self.alt
        data = base64.b64encode(self.path.read_bytes()).decode()
        bundle = {
            "text/plain": f"Figure: {self.caption}\n{self.provenance}",
            "text/html": (
                f'<figure class="xr2ct-figure" id="fig-{self.name}">'
                f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt, quote=True)}" '
                f'style="max-width:100%"/><figcaption><b>{cap}</b><br/><small>{prov}</small>'
                "</figcaption></figure>"
            ),
        }
        src = self.book_path()
        if src is not None:
            one_line = " ".join(alt.split())
            bundle["text/markdown"] = (
                f"```{{figure}} {src}\n:name: fig-{self.name.replace('_', '-')}\n"
                f":alt: {one_line}\n\n{_md_escape(self.caption)}\n\n"
                f"<small>{html.escape(self.provenance)}</small>\n```\n"
            )
        return bundle


def _md_escape(text: str) -> str:
    """Caption text as literal MyST: ``*``, ``_``, ``[``, `` ` `` and ``{`` kept as written."""
    for ch in "\\`*_[]{}<>":
        text = text.replace(ch, "\\" + ch)
    return text


def save_figure(
    fig,
    cfg: RunConfig,
    name: str,
    networks: str = "none",
    data: str | None = None,
    caption: str | None = None,
    alt: str | None = None,
    show: bool = True,
) -> Path:
    """Save ``fig`` as ``<run_dir>/figures/<name>.png`` with its provenance beside it, and
    show it (``show``) with a numbered caption, alt text and the provenance line under it.

    ``caption``: default the figure's suptitle (or its only panel's title), which then
    leaves the pixels (it would be said twice); else the name. ``alt``: default the
    caption and the panels' titles and axis labels. The figure is closed once shown
    (``plt.show()`` after it shows nothing). A :class:`~xr2ct_lib.utils.Skipped` is
    returned as it is.
    """
    if isinstance(fig, Skipped):
        return fig
    prov = Provenance.of(cfg, networks=networks, data=data)
    title, panels = _figure_text(fig, take_title=caption is None)
    caption = caption or title or name.replace("_", " ")
    path = atomic_write(
        cfg.run_dir / "figures" / f"{name}.png",
        lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight",
                                metadata={"Title": caption, "Description": prov.line()}),
        suffix=".png",
    )  # fmt: skip
    write_provenance(path, prov, caption, "figure computed by this run", cfg)
    if show:
        import matplotlib.pyplot as plt
        from IPython.display import display

        display(FigureOutput(path, name, caption, alt or alt_text(caption, panels), prov.line()))
        plt.close(fig)
    return path


def _is_p(col) -> bool:
    return str(col) == "p" or str(col).startswith("p ") or str(col).endswith(" p")


def _is_percent(col) -> bool:
    return "%" in str(col)


def integral(values) -> bool:
    """Whether a column holds counts: every finite value a whole number, one of them above 1
    (a column of 0.0 and 1.0 is more likely a rate than a count)."""
    x = pd.to_numeric(pd.Series(list(values)), errors="coerce").to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    return bool(x.size) and bool(np.all(x == np.round(x))) and float(np.abs(x).max()) > 1


def format_value(v, column="", counts: bool = False, percent: bool = False) -> str:
    """One cell for reading: NaN as an em dash, integers (and floats of a ``counts`` column)
    as integers, percentages (a column named with ``%``, or ``percent``) to one decimal,
    p-values to two significant digits, other numbers to three decimals (two significant
    digits below 0.001, thousands separated from 10 000)."""
    if v is None or (isinstance(v, float | np.floating) and np.isnan(v)):
        return "—"
    if isinstance(v, bool | np.bool_):
        return str(v)
    if isinstance(v, int | np.integer):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float | np.floating):
        v = float(v)
        if _is_p(column):
            return f"{v:.2g}"
        if percent or _is_percent(column):
            return f"{v:.1f}"
        if counts and v == round(v):
            return format_value(int(round(v)))
        a = abs(v)
        if 0 < a < 1e-3:
            return f"{v:.2g}"
        return f"{v:,.0f}" if a >= 10_000 else f"{v:.3f}"
    return str(v)


TABLE_CSS = [
    {"selector": "", "props": "border-collapse: collapse; margin: 0; font-size: 0.9em;"},
    {"selector": "th, td", "props": "padding: 0.25em 0.75em; border-bottom: 1px solid #ddd;"},
    {"selector": "td", "props": "text-align: right; white-space: nowrap;"},
    {"selector": "th", "props": "text-align: left;"},
]


@dataclass
class TableOutput:
    """A saved table as a notebook output: its caption above it, the table (scrolling
    sideways when wider than the page), its provenance below."""

    df: pd.DataFrame
    caption: str
    provenance: str
    path: Path
    percent: bool = False  # every number a percentage ("% of …" in the caption)

    @property
    def data(self) -> pd.DataFrame:
        return self.df

    def styler(self):
        df = self.df
        formatters = {
            c: partial(format_value, column=c, counts=integral(df[c].to_numpy().ravel()),
                       percent=self.percent)
            for c in df.columns.unique()
        }  # fmt: skip
        return df.style.format(formatters).set_table_styles(TABLE_CSS)

    def to_html(self) -> str:
        return (
            '<div class="xr2ct-table">'
            f'<p class="xr2ct-table-caption"><b>{html.escape(self.caption)}</b></p>'
            f'<div style="overflow-x: auto; max-width: 100%;">{self.styler().to_html()}</div>'
            f'<p class="xr2ct-provenance"><small>{html.escape(self.provenance)}</small></p>'
            "</div>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        shown = self.df.copy()
        for i, c in enumerate(shown.columns):
            col = shown.iloc[:, i]
            n = integral(col)
            shown.isetitem(i, [format_value(v, c, n, self.percent) for v in col])
        return f"{self.caption}\n{shown.to_string()}\n{self.provenance}"


def save_table(
    df: pd.DataFrame,
    cfg: RunConfig,
    name: str,
    caption: str,
    networks: str = "none",
    data: str | None = None,
    quoted: bool = False,
) -> TableOutput:
    """Write ``<run_dir>/tables/<name>.csv`` and its ``.provenance.json``; return the table
    for display (:class:`TableOutput`), its caption above and its provenance line below.

    ``quoted``: a table quoted from the paper, not computed by the run; it goes to
    ``<run_dir>/tables/quoted/`` so that it never sits beside the run's own tables, and
    its record says so. Cells are formatted by :func:`format_value`; the CSV keeps full
    precision. A :class:`~xr2ct_lib.utils.Skipped` is returned as it is.
    """
    if isinstance(df, Skipped):
        return df
    prov = Provenance.of(cfg, networks=networks, data=data)
    folder = cfg.run_dir / "tables" / ("quoted" if quoted else "")
    path = folder / f"{name}.csv"
    atomic_write_text(path, df.to_csv(index=not isinstance(df.index, pd.RangeIndex)))
    kind = "quoted from the paper" if quoted else "table computed by this run"
    write_provenance(path, prov, caption, kind, cfg)
    return TableOutput(df, caption, prov.line(), path, percent="% of " in caption)
