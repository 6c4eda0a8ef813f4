"""The reader kit's three-plane viewer inside a notebook output: volumes side by side,
scrolled, windowed and cross-referenced in the static HTML book, with no kernel.

:func:`volume_viewers` returns an object whose ``_repr_html_`` is one self-contained HTML
fragment: each volume as the kit's PNG sprite sheet (:func:`~xr2ct_lib.study.kit.
volume_sprite`), the kit's ``viewer.js`` (defined once per page however many fragments it
holds) and the kit's viewer styles, scoped to the fragment so that they leave the book's
page alone. JupyterLab runs the script once the notebook is trusted (a cell run here is).
"""

from __future__ import annotations

import html
import json
import re
import uuid
from dataclasses import dataclass
from importlib import resources

import numpy as np

from xr2ct_lib.data.hu_window import PAPER_WINDOW, HUWindow
from xr2ct_lib.study.kit import volume_sprite

SCOPE = "xr2ct-volviewer"
# the kit's rules for the viewer itself (not its page, buttons or answer forms)
VIEWER_SELECTORS = (".viewer", ".planes", ".plane", ".frame", ".ori")


def _template(name: str) -> str:
    return (resources.files("xr2ct_lib.study") / "template" / name).read_text(encoding="utf-8")


def scoped_viewer_css() -> str:
    """The kit's viewer rules from ``kit.css``, each selector prefixed with the fragment's
    class, and the colours they use (the kit defines them on ``:root``)."""
    rules = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", _template("kit.css")):
        sel = [s.strip() for s in selectors.split(",")]
        if all(s.startswith(VIEWER_SELECTORS) for s in sel):
            rules.append(", ".join(f".{SCOPE} {s}" for s in sel) + " {" + body.strip() + "}")
    head = (f".{SCOPE} {{ --accent: #4da3ff; --dim: #6b7480; margin: 0.5em 0 1em; }}\n"
            f".{SCOPE} .xr2ct-vv-title {{ font-weight: 600; margin: 0.6em 0 0.2em; }}\n"
            f".{SCOPE} select {{ font-size: 13px; }}")  # fmt: skip
    return head + "\n" + "\n".join(rules)


@dataclass
class VolumeViewers:
    """Volumes in the kit's three-plane viewer, one above the other, as a notebook output."""

    volumes: dict[str, np.ndarray]
    caption: str
    provenance: str = ""
    window: HUWindow = PAPER_WINDOW

    def _repr_html_(self) -> str:
        uid = "xr2ct-vv-" + uuid.uuid4().hex[:10]
        data = {
            "window_hu": [self.window.lo, self.window.hi],
            "volumes": [{"id": f"{uid}-{i}", "title": name, "volume": volume_sprite(v)}
                        for i, (name, v) in enumerate(self.volumes.items())],
        }  # fmt: skip
        payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        boot = (
            "(function () {\n"
            "  if (!window.XR2CT) window.XR2CT = (function () {\n"
            + _template("viewer.js")
            + "\n  return XR2CT; })();\n"
            f"  const root = document.getElementById({json.dumps(uid)});\n"
            f"  const data = {payload};\n"
            "  const settings = { window: 1, crosshair: true }, views = [];\n"
            "  const redraw = () => views.forEach((v) => v.redraw());\n"
            "  for (const v of data.volumes) {\n"
            "    const title = window.XR2CT.el('div', { class: 'xr2ct-vv-title' }, v.title);\n"
            "    const view = window.XR2CT.viewer(v.id, v.volume, data.window_hu, settings,\n"
            "                                     redraw);\n"
            "    views.push(view);\n"
            "    root.querySelector('.xr2ct-vv-list').append(title, view);\n"
            "  }\n"
            "})();\n"
        )
        prov = f"<p><small>{html.escape(self.provenance)}</small></p>" if self.provenance else ""
        return (
            f'<div class="{SCOPE}" id="{uid}"><style>{scoped_viewer_css()}</style>'
            f'<p class="xr2ct-table-caption"><b>{html.escape(self.caption)}</b></p>'
            f'<div class="xr2ct-vv-list"></div>{prov}</div>'
            f"<script>{boot}</script>"
        )

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.volumes.items())
        return f"{self.caption} (three-plane viewers: {shapes}; shown in HTML only)"


def volume_viewers(
    volumes: dict[str, np.ndarray],
    caption: str,
    provenance: str = "",
    window: HUWindow = PAPER_WINDOW,
) -> VolumeViewers:
    """Three-plane viewers of (D, H, W) volumes in [−1, 1] (the preprocessed CT's range,
    ``window`` its HU), titled by their keys, for ``display`` in a notebook."""
    for name, v in volumes.items():
        if np.asarray(v).ndim != 3:
            raise ValueError(f"{name}: expected a (D, H, W) volume, got shape {np.shape(v)}")
    return VolumeViewers({k: np.asarray(v) for k, v in volumes.items()}, caption, provenance,
                         window)  # fmt: skip
