"""Every saved figure and table carries its provenance, outside the figure's pixels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from xr2ct_lib.config import load_config  # noqa: E402
from xr2ct_lib.viz.provenance import save_figure, save_table  # noqa: E402


def test_figures_keep_provenance_out_of_the_pixels_and_show_a_captioned_figure(
    tmp_path, monkeypatch
):
    import json

    import IPython.display
    from PIL import Image

    from xr2ct_lib.viz.provenance import FigureOutput

    cfg = load_config("smoke", None, tmp_path / "run", 0)
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    axes[0].plot([0, 1], [0, 1])
    axes[0].set_title("loss")
    axes[1].set_xlabel("step")
    fig.suptitle("Training curves")
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    path = save_figure(fig, cfg, "fig_a", networks="a test network")
    assert path.is_file()
    assert not any("profile:" in t.get_text() for t in fig.texts)  # nothing drawn in
    assert fig._suptitle is None  # the title became the caption
    width = Image.open(path).size[0]
    assert width <= 6 * 110 + 10  # no footer widening the PNG beyond the figure
    meta = Image.open(path).text
    assert meta["Title"] == "Training curves" and "a test network" in meta["Description"]
    record = json.loads((path.parent / "fig_a.provenance.json").read_text())
    assert record["profile"] == "smoke" and record["networks"] == "a test network"
    assert record["caption"] == "Training curves" and "simulated" in record["data"]
    (out,) = shown
    assert isinstance(out, FigureOutput)
    bundle = out._repr_mimebundle_()
    assert "data:image/png;base64," in bundle["text/html"]
    assert "Training curves" in bundle["text/html"] and "a test network" in bundle["text/html"]
    assert 'alt="Training curves. Panels: loss; step"' in bundle["text/html"]
    assert "text/markdown" not in bundle  # outside the repository Sphinx cannot find it


def test_the_book_figure_is_a_numbered_myst_figure_with_alt_text(tmp_path, monkeypatch):
    from xr2ct_lib.viz import provenance

    png = tmp_path / "runs" / "smoke" / "figures" / "08_roc.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"\x89PNG fake")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    out = provenance.FigureOutput(png, "08_roc", "ROC *curves* [test]", "Two ROC curves",
                                  "profile: smoke · data: x")  # fmt: skip
    md = out._repr_mimebundle_()["text/markdown"]
    assert md.startswith("```{figure} /runs/smoke/figures/08_roc.png\n:name: fig-08-roc\n")
    assert ":alt: Two ROC curves\n" in md
    assert "ROC \\*curves\\* \\[test\\]" in md  # the caption is literal text
    assert "<small>profile: smoke · data: x</small>" in md


def test_tables_read_cleanly_and_carry_a_provenance_record(tmp_path):
    import json

    import numpy as np
    import pandas as pd

    cfg = load_config("smoke", None, tmp_path / "run", 0)
    df = pd.DataFrame({"ppv": [0.839, np.nan], "npv": [0.831, 0.5], "PE %": [35.0, 33.3333],
                       "tp": [10.0, 3.0], "FD": [9.6e-7, 0.2]}, index=["a", "b"])  # fmt: skip
    out = save_table(df, cfg, "t1", "A caption", networks="net")
    html = out.to_html()
    assert ">nan<" not in html and ">—<" in html
    assert "35.0<" in html and "35.000" not in html and "33.3<" in html
    assert ">10<" in html and "9.6e-07" in html
    assert "padding" in html  # cells apart: no '0.8390.831'
    assert html.index("A caption") < html.index("<table") < html.index("profile: smoke")
    assert "overflow-x: auto" in html  # a wide table scrolls instead of being cut off
    record = json.loads((tmp_path / "run" / "tables" / "t1.provenance.json").read_text())
    assert record["kind"] == "table computed by this run" and record["networks"] == "net"
    assert record["file"] == "t1.csv" and record["profile"] == "smoke"
    shares = save_table(df[["ppv"]] * 100, cfg, "t2", "Signs (% of patients)").to_html()
    assert "83.9<" in shares and "83.900" not in shares
    save_table(df, cfg, "table3", "The paper's Table 3", data="quoted", quoted=True)
    quoted = tmp_path / "run" / "tables" / "quoted"
    assert (quoted / "table3.csv").is_file()
    assert not (tmp_path / "run" / "tables" / "table3.csv").exists()
    assert json.loads((quoted / "table3.provenance.json").read_text())["kind"] == (
        "quoted from the paper"
    )


def test_tables_show_small_p_values_instead_of_rounding_them_to_zero(tmp_path):
    import numpy as np
    import pandas as pd

    cfg = load_config("smoke", None, tmp_path / "run", 0)
    df = pd.DataFrame(
        {
            "auc": [0.84779, 0.5],
            "p": np.array([3.9e-08, 0.4289], np.float32),
            "p hit > random": [1e-5, 1.0],
        }
    )
    html = save_table(df, cfg, "t", "a table").to_html()
    assert "3.9e-08" in html and "1e-05" in html and "0.43" in html and "0.848" in html
    assert pd.read_csv(tmp_path / "run" / "tables" / "t.csv")["p"][0] == pytest.approx(
        3.9e-08
    )  # not rounded
