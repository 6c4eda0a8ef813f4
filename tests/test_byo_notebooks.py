"""Step 6 of README's "Bring your own cohort": the book's evaluation notebooks on a user's
own run folder, in both forms the README shows.

A cohort in real formats (NIfTI and MHA CTs, PNG and DICOM X-rays, label maps for some
patients; no DRRs, no clot masks, no simulated patient) is trained by ``xr2ct train`` in the
``smoke`` profile; then ``xr2ct run-notebooks --manifest M --run-dir D --only 05 06`` and the
``jupytext ... | papermill - ...`` pipe of chapter 8 run on it. Chapters 5, 6 and 8 are the
ones that evaluate a user's bundle (generation, Table 2, Tables 1 and 7); the sections that
need what only the simulation records are skipped, and say so.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from real_cohort import chest, write_cohort, write_manifest, write_volume, write_xray_dicom

from xr2ct_lib.book import EXECUTED_DIR
from xr2ct_lib.cli import main
from xr2ct_lib.config import REPO_ROOT

pytestmark = pytest.mark.slow
HELD_OUT = ["R0", "R1", "R6", "R7"]  # folds 0 and 1


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path]:
    """(manifest, run dir) of 12 patients in real formats trained by ``xr2ct train``."""
    folder = tmp_path_factory.mktemp("my cohort")
    df = write_cohort(folder, n=12)
    df["fold"] = [i % 6 for i in range(12)]
    df["pe_label"] = [(i // 6) % 2 for i in range(12)]  # one PE, one not, in every fold
    ct, _ = chest(seed=3)
    df.loc[3, "ct_path"] = write_volume(folder / "R3_ct.mha", ct)
    df.loc[4, "cxr_path"] = write_xray_dicom(folder / "R4_cxr.dcm", chest(seed=4)[0])
    df.loc[5, "label_path"] = ""  # the threshold lung segmentation instead
    manifest = write_manifest(df, folder / "cohort.csv")
    run = tmp_path_factory.mktemp("runs") / "mine"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XR2CT_NO_PROGRESS", "1")
        argv = ["train", "--profile", "smoke", "--schedule", "short", "--manifest",
                str(manifest), "--run-dir", str(run)]  # fmt: skip
        assert main(argv) == 0
    assert (run / "bundle" / "provenance.json").is_file()
    return manifest, run


def _outputs(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            data = out.get("data", {})
            text += [data.get(k, "") for k in ("text/markdown", "text/plain", "text/html")]
    return "\n".join(text)


def test_run_notebooks_and_the_papermill_pipe_on_a_users_run_dir(cohort, monkeypatch):
    manifest, run = cohort
    monkeypatch.setenv("XR2CT_NO_PROGRESS", "1")
    book_before = {f: f.stat().st_mtime_ns for f in EXECUTED_DIR.glob("*")}

    argv = ["run-notebooks", "--profile", "smoke", "--manifest", str(manifest), "--run-dir",
            str(run), "--only", "05", "06"]  # fmt: skip
    assert main(argv) == 0
    executed = run / "executed"
    assert (executed / "05_generation.ipynb").is_file()
    assert (executed / "06_quantitative_metrics.ipynb").is_file()
    assert json.loads((executed / "timings-smoke.json").read_text()).keys() == {
        "05_generation", "06_quantitative_metrics", "sum", "wall", "jobs",
        "reference_s"}  # fmt: skip
    # the book's own executed chapters are untouched
    assert {f: f.stat().st_mtime_ns for f in EXECUTED_DIR.glob("*")} == book_before

    # chapter 5: the held-out patients generated with the run's own bundle
    assert sorted(p.stem for p in (run / "generated").glob("*.safetensors")) == sorted(HELD_OUT)
    fid = pd.read_csv(run / "tables" / "05_fidelity_per_patient.csv", index_col=0)
    assert sorted(fid.index) == sorted(HELD_OUT) and fid["SSIM"].between(-1, 1).all()
    out5 = _outputs(executed / "05_generation.ipynb")
    assert "Fig. 3 skipped" in out5 and "patients of cohort.csv" in out5
    assert f"bundle {(run / 'bundle').resolve()} (`xr2ct train` on the real-format cohort" in out5
    # chapter 6: Table 2 on test fold 0 (R0, R6)
    t2 = pd.read_csv(run / "tables" / "table2_generation_quality.csv", index_col=0)
    assert len(t2) == 1 and "real cohort: hospital" in _outputs(
        executed / "06_quantitative_metrics.ipynb")  # fmt: skip

    # chapter 8 through the README's pipe, from the repository root with relative paths
    rel = lambda p: os.path.relpath(p, REPO_ROOT)  # noqa: E731
    py = shlex.quote(sys.executable)
    cmd = (f"{py} -m jupytext --to ipynb notebooks/08_pe_classification.py -o - | {py} -m "
           f"papermill - {shlex.quote(rel(run / '08.ipynb'))} -p profile smoke -p manifest "
           f"{shlex.quote(rel(manifest))} -p run_dir {shlex.quote(rel(run))}")  # fmt: skip
    res = subprocess.run(cmd, shell=True, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    t1 = pd.read_csv(run / "tables" / "table1_classification.csv", index_col=0)
    assert list(t1.index) == ["CTPA only (latent DenseNet)", "CXR only (CNN)",
                              "Generated CTPA (latent DenseNet)"]  # fmt: skip
    assert set(t1["patients"]) == {4}  # test folds 0 and 1 (smoke's cv_folds), 2 each
    t7 = pd.read_csv(run / "tables" / "table7_ctpa_classifiers.csv", index_col=0)
    assert "Generated CTPA, latent DenseNet" in t7.index
    assert not (run / "tables" / "08_table1_ceilings.csv").exists()
    assert not (run / "tables" / "08_signal_budget.csv").exists()
    out8 = _outputs(run / "08.ipynb")
    for words in ("no patient of this cohort has a clot mask",
                  "Skipped: this cohort has no simulated patients, whose records the ceilings",
                  "cohort of cohort.csv"):  # fmt: skip
        assert words in out8, words
    assert "simulated" not in out8.split("This run's numbers")[1].split("\n")[0]


def test_a_run_folder_uses_its_own_bundle_and_a_wrong_one_names_the_fix(cohort, tmp_path):
    from xr2ct_lib.config import load_config
    from xr2ct_lib.models.bundle import StaleBundleError
    from xr2ct_lib.run.networks import networks_for

    manifest, run = cohort
    nets = networks_for(load_config("smoke", manifest, run, weights="shipped"))
    assert nets.bundle == run / "bundle" and nets.latents == run / "shipped" / "latents"
    with pytest.raises(StaleBundleError) as e:  # trained for smoke, asked for workshop
        networks_for(load_config("workshop", manifest, run, weights="shipped"))
    assert "trained for profile smoke" in str(e.value)
    assert "xr2ct train --profile workshop" in str(e.value) and "make weights" not in str(e.value)
    with pytest.raises(FileNotFoundError) as e:  # no bundle here, none shipped for paper
        networks_for(load_config("paper", manifest, tmp_path / "other", weights="shipped"))
    assert str(tmp_path / "other" / "bundle") in str(e.value) and "xr2ct train" in str(e.value)


def test_run_notebooks_refuses_in_one_line_before_any_kernel(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        (["--manifest", str(tmp_path / "nothere.csv"), "--run-dir", str(tmp_path / "empty")],
         f"{tmp_path / 'nothere.csv'}: manifest not found"),
        (["--run-dir", str(tmp_path / "empty")],
         f"{tmp_path / 'empty' / 'prepared' / 'index.csv'} not found: run `xr2ct train`"),
    ]  # fmt: skip
    for extra, words in cases:
        assert main(["run-notebooks", "--profile", "smoke", *extra, "--only", "05"]) == 1
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and words in err, err
    assert list((tmp_path / "empty").iterdir()) == []  # nothing written, no executed/
