"""Every saved figure carries its provenance line, clear of the axes' own labels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from xr2ct_lib.config import load_config  # noqa: E402
from xr2ct_lib.viz.provenance import save_figure, save_table  # noqa: E402


@pytest.mark.parametrize("size", [(4, 2), (9, 3), (6, 6)])
def test_provenance_line_is_saved_below_the_x_label(tmp_path, size):
    cfg = load_config("smoke", None, tmp_path / "run", 0)
    fig, ax = plt.subplots(figsize=size)
    ax.plot([0, 1], [0, 1])
    xlabel = ax.set_xlabel("step (all stages)")
    fig.tight_layout()  # as the notebooks do: the x label sits on the bottom edge
    path = save_figure(fig, cfg, "fig", networks="a test network")
    assert path.is_file() and path.stat().st_size > 0
    stamp = [t for t in fig.texts if "a test network" in t.get_text()]
    assert len(stamp) == 1 and "profile: smoke" in stamp[0].get_text()
    r = fig.canvas.get_renderer()
    others = Bbox.union([a.get_tightbbox(r) for a in fig.axes])  # ticks, labels, legend
    assert stamp[0].get_window_extent(r).y1 <= min(others.y0, xlabel.get_window_extent(r).y0)
    plt.close(fig)


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
