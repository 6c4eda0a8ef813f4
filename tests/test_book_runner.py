"""The book's runner: notebooks side by side in the order their chapters allow."""

import json

import nbformat
import pytest

from xr2ct_lib import book

NOTEBOOK = """# %% tags=["parameters"]
profile = "smoke"
seed = 0
run_dir = None

# %%
import os, pathlib, time
out = pathlib.Path(run_dir)
{body}
(out / "{name}.json").write_text(json.dumps({{
    "threads": os.environ.get("XR2CT_THREADS"),
    "start": t0, "end": time.time(),
    "saw": sorted(p.stem for p in out.glob("*.json")),
}}))
"""


def _write(folder, name, body="t0 = time.time(); time.sleep(1.5)"):
    text = NOTEBOOK.format(name=name, body="import json\n" + body)
    (folder / f"{name}.py").write_text(text)


@pytest.fixture
def chapters(tmp_path, monkeypatch):
    src, out = tmp_path / "notebooks", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    monkeypatch.setattr(book, "NOTEBOOK_DIR", src)
    monkeypatch.setattr(book, "EXECUTED_DIR", tmp_path / "executed")
    return src, out


def test_requirements_follow_the_chapters_and_the_weights():
    stems = ["01_a", "02_b", "04_d", "05_e", "08_h", "12_l"]
    need = book.requirements(stems, "shipped")
    assert need["05_e"] == {"01_a"} and need["02_b"] == {"01_a"}
    assert need["12_l"] == {"05_e", "08_h"}
    assert book.requirements(stems, "trained")["05_e"] == {"01_a", "04_d"}
    assert book._dependents("05_e", need) == {"08_h", "12_l"}  # started first when ready
    # a chapter left out is taken as done (`--only`)
    assert book.requirements(["06_f"], None)["06_f"] == set()


def test_two_at_a_time_after_their_prerequisites_with_one_thread_each(chapters):
    src, out = chapters
    for name in ("01_a", "02_b", "05_e"):
        _write(src, name)
    t = book.run_all("smoke", None, str(out), 0, jobs=2, reference=False)
    rec = {n: json.loads((out / f"{n}.json").read_text()) for n in ("01_a", "02_b", "05_e")}
    assert {r["threads"] for r in rec.values()} == {"1"}
    # 02 and 05 read chapter 1 only: both started after it ended, and ran side by side
    assert rec["02_b"]["start"] >= rec["01_a"]["end"] and rec["05_e"]["start"] >= rec["01_a"]["end"]
    assert rec["02_b"]["start"] < rec["05_e"]["end"] and rec["05_e"]["start"] < rec["02_b"]["end"]
    assert t["jobs"] == 2 and set(t) >= {"01_a", "02_b", "05_e", "sum", "wall"}
    # a run folder of one's own: the executed notebooks go there, not to the book's
    executed = json.loads((out / "executed" / "timings-smoke.json").read_text())
    assert executed == t and (out / "executed" / "05_e.ipynb").is_file()
    assert "| 05_e |" in (out / "executed" / "timings.md").read_text()
    assert not book.EXECUTED_DIR.exists()
    # papermill's injected parameters are hidden in the book (the run's values are passed)
    nb = nbformat.read(out / "executed" / "05_e.ipynb", as_version=4)
    (injected,) = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "remove-cell" in injected.metadata["tags"] and "run_dir" in injected.source


def test_a_failing_chapter_stops_the_chapters_that_read_it(chapters):
    src, out = chapters
    _write(src, "01_a")
    _write(src, "05_e", body="t0 = time.time(); raise ValueError('broken chapter')")
    _write(src, "08_h")
    with pytest.raises(SystemExit, match="05_e.py failed"):
        book.run_all("smoke", None, str(out), 0, jobs=2)
    assert (out / "01_a.json").is_file() and not (out / "08_h.json").exists()
    assert (out / "executed" / "05_e.FAILED.ipynb").is_file()


def test_the_timings_page_table_lists_each_chapter_and_the_reference():
    t = {"01_data": 80.4, "08_pe": 186.0, "sum": 266.4, "wall": 200.0, "jobs": 2,
         "reference_s": 2.31}  # fmt: skip
    md = book.timings_markdown(t, "workshop")
    assert "`reference_s` = 2.31" in md and "Profile `workshop`, 2 notebook(s)" in md
    assert "| 01_data | 80 | 1.3 |" in md and "| 08_pe | 186 | 3.1 |" in md
    assert "| **wall clock** | 200 | 3.3 |" in md
    assert "reference_s" not in book.timings_markdown({**t, "reference_s": None}, "smoke")


def test_with_prerequisites_names_every_chapter_a_fresh_clone_must_run_first():
    from xr2ct_lib.cli import build_parser

    assert book.with_prerequisites(["03"]) == ["01", "02", "03"]
    assert book.with_prerequisites(["12_reader_study"]) == ["01", "05", "08", "12"]
    assert book.with_prerequisites(["05"], "trained") == ["01", "02", "03", "04", "05"]
    assert book.with_prerequisites(["01", "09"]) == ["01", "05", "08", "09"]
    args = build_parser().parse_args(["run-notebooks", "--only", "03", "--with-prerequisites"])
    assert args.with_prerequisites and args.only == ["03"]
