"""The command line on bad input: one line naming the file (and row, column), exit ≠ 0, no output.

Every test runs the real entry point (``xr2ct_lib.cli.main``) on a tiny cohort written in a
real cohort's formats (NIfTI CT and label map, 16-bit PNG X-ray; no phantom).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from real_cohort import chest, write_cohort, write_manifest, write_volume

from xr2ct_lib import __version__
from xr2ct_lib.cli import COMMAND_ORDER, build_parser, main
from xr2ct_lib.config import REPO_ROOT
from xr2ct_lib.data.manifest import ManifestError


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("XR2CT_NO_PROGRESS", "1")
    monkeypatch.delenv("XR2CT_DEBUG", raising=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Six patients' images in one folder; tests write their manifests beside them."""
    folder = tmp_path_factory.mktemp("cohort")
    return folder, write_cohort(folder, n=6)


def _manifest(cohort, name: str, edit=None) -> Path:
    folder, df = cohort
    df = df.copy()
    if edit is not None:
        df = edit(df, folder)
    return write_manifest(df, folder / name)


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_problem(out: str, err: str, *words: str) -> str:
    """The single problem line; asserts it holds every word and that no traceback shows."""
    lines = [ln for ln in (out + err).splitlines() if "problem(s) in" not in ln]
    assert "Traceback" not in out + err
    assert len(lines) == 1, lines
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _set(row: int, column: str, value):
    def edit(df, folder):
        df.loc[row, column] = value
        return df

    return edit


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---------------------------------------------------------------- good input, end to end


def test_validate_and_prepare_a_real_format_cohort(cohort, tmp_path, capsys, monkeypatch):
    folder, df = cohort
    edit = _set(3, "label_path", "")  # label maps are optional: a threshold lung mask instead
    manifest = _manifest(cohort, "good.csv", edit)
    monkeypatch.chdir(tmp_path)  # command-line paths are taken from the current directory
    rel = os.path.relpath(manifest, tmp_path)
    rc, out, err = _run(capsys, "validate-manifest", rel)
    assert rc == 0 and f"{manifest}: valid (6 patients)" in out, err
    rc, out, err = _run(
        capsys, "prepare", "--profile", "smoke", "--manifest", rel, "--run-dir", "runs/mine"
    )
    assert rc == 0, err
    prepared = tmp_path / "runs" / "mine" / "prepared"
    index = pd.read_csv(prepared / "index.csv", dtype={"patient_id": str})
    assert index.patient_id.tolist() == df.patient_id.tolist()
    from safetensors.numpy import load_file

    arrays = load_file(str(prepared / "R3.safetensors"))
    assert arrays["ct"].shape == (32, 32, 32) and arrays["cxr"].shape == (3, 64, 64)
    assert arrays["ct_reader"].shape == arrays["clot_reader"].shape == (48, 40, 48)
    assert -1 <= arrays["ct"].min() < arrays["ct"].max() <= 1 and arrays["lung"].any()
    assert not [p for p in prepared.iterdir() if p.name.startswith(".")], "temporary files left"


def test_relative_manifest_is_taken_from_the_current_directory(
    cohort, tmp_path, capsys, monkeypatch
):
    folder, _ = cohort
    manifest = _manifest(cohort, "relative.csv")
    monkeypatch.chdir(folder.parent)
    rc, out, err = _run(capsys, "validate-manifest", Path(folder.name) / manifest.name)
    assert rc == 0 and "valid (6 patients)" in out, out + err
    rc, _, err = _run(
        capsys,
        "prepare",
        "--manifest",
        Path(folder.name) / "absent.csv",
        "--run-dir",
        tmp_path / "r",
    )
    assert (
        rc == 1 and f"{folder.parent / folder.name / 'absent.csv'}: manifest file not found" in err
    )
    assert not (tmp_path / "r").exists()


def test_paths_with_spaces(cohort, tmp_path, capsys):
    folder, df = cohort
    spaced = tmp_path / "my cohort" / "CT scans"
    spaced.mkdir(parents=True)
    shutil.copy(folder / "R0_ct.nii.gz", spaced / "patient 0 ct.nii.gz")
    df = df.copy()
    df.loc[0, "ct_path"] = "CT scans/patient 0 ct.nii.gz"  # relative to the manifest
    for column in ("cxr_path", "label_path"):
        df.loc[0, column] = str(folder / df.loc[0, column])
    manifest = write_manifest(df.iloc[:1], tmp_path / "my cohort" / "one patient.csv")
    rc, out, err = _run(capsys, "validate-manifest", manifest)
    assert rc == 0, out + err


def test_validation_writes_nothing(cohort, tmp_path, capsys):
    folder, _ = cohort
    manifest = _manifest(cohort, "nowrite.csv")
    before, repo_runs = _files(folder), sorted((REPO_ROOT / "runs").glob("*/config.json"))
    run_dir = tmp_path / "run"
    rc, _, _ = _run(capsys, "validate-manifest", manifest, "--run-dir", run_dir)
    assert rc == 0
    rc, _, _ = _run(capsys, "validate-manifest", manifest)  # default run dir in the repo
    assert rc == 0
    assert _files(folder) == before and not run_dir.exists()
    assert sorted((REPO_ROOT / "runs").glob("*/config.json")) == repo_runs


# ------------------------------------------------------------------------ bad images


def _truncate(df, folder):
    data = (folder / "R0_ct.nii.gz").read_bytes()
    (folder / "R0_cut.nii.gz").write_bytes(data[: len(data) // 2])
    df.loc[0, "ct_path"] = "R0_cut.nii.gz"
    return df


def _colour_xray(df, folder):
    grey = np.asarray(Image.open(folder / "R1_cxr.png"), np.float32)
    g8 = (255 * grey / grey.max()).astype(np.uint8)
    Image.fromarray(np.stack([g8, 255 - g8, g8 // 2], -1)).save(folder / "R1 photo.png")
    df.loc[1, "cxr_path"] = "R1 photo.png"
    return df


def _dicom_without_pixels(df, folder):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(folder / "R2_report.dcm")
    df.loc[2, "cxr_path"] = "R2_report.dcm"
    return df


def _nan_ct(df, folder):
    ct = chest(seed=3)[0].astype(np.float32)
    ct[4, 5, 6] = np.nan  # SimpleITK alone would read this voxel as 0
    df.loc[3, "ct_path"] = write_volume(folder / "R3_nan.nii.gz", ct)
    return df


def _label_off_grid(df, folder):
    labels = chest(seed=4)[1][::2, ::2, ::2]
    df.loc[4, "label_path"] = write_volume(folder / "R4_small_labels.nii.gz", labels)
    return df


def _raw_ct(df, folder):
    ct = chest(seed=5)[0].astype(np.int32) + 1024  # stored without the HU offset
    df.loc[5, "ct_path"] = write_volume(folder / "R5_raw.nii.gz", ct.astype(np.uint16))
    return df


def _folder_as_ct(df, folder):
    (folder / "R0_dicom").mkdir(exist_ok=True)
    df.loc[0, "ct_path"] = "R0_dicom"
    return df


def _ct_as_xray(df, folder):
    df.loc[1, "cxr_path"] = df.loc[1, "ct_path"]
    return df


def _label_without_lungs(df, folder):
    df.loc[2, "label_path"] = write_volume(
        folder / "R2_nolung.nii.gz", np.ones((24, 48, 48), np.uint8)
    )
    return df


BAD_IMAGES = {
    # name: (edit, row, column, words of the message)
    "truncated CT": (_truncate, 1, "ct_path", ["R0_cut.nii.gz", "truncated"]),
    "colour X-ray": (_colour_xray, 2, "cxr_path", ["R1 photo.png", "colour image"]),
    "DICOM without pixels": (
        _dicom_without_pixels,
        3,
        "cxr_path",
        ["R2_report.dcm", "no pixel data"],
    ),
    "CT with NaN": (_nan_ct, 4, "ct_path", ["R3_nan.nii.gz", "1 of 55296 voxels are NaN"]),
    "label map off grid": (
        _label_off_grid,
        5,
        "label_path",
        ["R4_small_labels.nii.gz", "not on the CT's voxel grid"],
    ),
    "CT not in HU": (
        _raw_ct,
        6,
        "ct_path",
        ["R5_raw.nii.gz", "not a chest CT in Hounsfield units"],
    ),
    "folder without DICOM": (_folder_as_ct, 1, "ct_path", ["R0_dicom", "no DICOM series"]),
    "CT given as X-ray": (_ct_as_xray, 2, "cxr_path", ["R1_ct.nii.gz", "a radiograph must be 2D"]),
    "label map without lungs": (
        _label_without_lungs,
        3,
        "label_path",
        ["R2_nolung.nii.gz", "lung-lobe labels"],
    ),
}


@pytest.mark.parametrize("fault", list(BAD_IMAGES))
def test_bad_image_is_named_by_validate_and_prepare(fault, cohort, tmp_path, capsys):
    edit, row, column, words = BAD_IMAGES[fault]
    manifest = _manifest(cohort, f"{fault.replace(' ', '_')}.csv", edit)
    rc, out, err = _run(capsys, "validate-manifest", manifest)
    assert rc == 1
    pid = f"R{row - 1}"
    _one_problem(out, err, str(manifest), f"row {row}", f"'{pid}'", f"column={column}", *words)
    run_dir = tmp_path / "run"
    rc, out, err = _run(
        capsys, "prepare", "--profile", "smoke", "--manifest", manifest, "--run-dir", run_dir
    )
    assert rc == 1
    _one_problem(out, err, "xr2ct prepare: error:", f"row {row}", f"column={column}", *words)
    assert not run_dir.exists(), "prepare wrote before validating"


def test_grey_rgb_and_16_bit_xrays_are_accepted(cohort, capsys):
    def edit(df, folder):
        grey = np.asarray(Image.open(folder / "R0_cxr.png"))
        assert grey.dtype == np.uint16  # the cohort's X-rays are 16-bit PNGs
        g8 = (grey >> 8).astype(np.uint8)
        Image.fromarray(np.stack([g8] * 3, -1)).save(folder / "R0_rgb.jpg", quality=90)
        df.loc[0, "cxr_path"] = "R0_rgb.jpg"
        return df

    rc, out, err = _run(capsys, "validate-manifest", _manifest(cohort, "rgb.csv", edit))
    assert rc == 0, out + err


# -------------------------------------------------------- errors during preprocessing


def _no_lung(df, folder):
    ct, lungs = chest(seed=2)
    ct[lungs > 0] = 40  # lungs filled: air only outside the body
    df.loc[2, "ct_path"] = write_volume(folder / "R2_nolung_ct.nii.gz", ct)
    df.loc[2, "label_path"] = ""
    return df


def test_ct_without_lungs_stops_prepare_with_one_line(cohort, tmp_path, capsys):
    manifest = _manifest(cohort, "nolung.csv", _no_lung)
    run_dir = tmp_path / "run"
    args = ("prepare", "--profile", "smoke", "--manifest", manifest, "--run-dir", run_dir)
    rc, out, err = _run(capsys, *args)
    assert rc == 1
    _one_problem(out, err, "row 3", "R2_nolung_ct.nii.gz", "no lung found")
    prepared = run_dir / "prepared"
    assert not (prepared / "index.csv").exists() and not (prepared / "R2.safetensors").exists()
    assert all(not p.name.startswith(".") for p in prepared.iterdir())
    with pytest.raises(ManifestError, match="no lung found"):  # --debug shows the traceback
        main(["--debug", *map(str, args)])


def test_full_disk_names_the_file_and_leaves_no_partial_file(cohort, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    manifest = _manifest(cohort, "disk.csv")
    run_dir = tmp_path / "run"
    rc, out, err = _run(
        capsys, "prepare", "--profile", "smoke", "--manifest", manifest, "--run-dir", run_dir
    )
    assert rc == 1
    _one_problem(out, err, str(run_dir / "prepared" / "R0.safetensors"), "No space left on device")
    assert list((run_dir / "prepared").iterdir()) == []


# ---------------------------------------------------------------------- bad manifests


def _text(name: str, text: str | bytes):
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    return make


HEADER = "patient_id,pe_label,fold,source,ct_path,cxr_path"
BAD_MANIFESTS = {
    "JSON": (
        _text("m.json", '[{"patient_id": "R0"}]'),
        "looks like JSON; expected a comma-separated CSV",
    ),
    "semicolons": (
        _text("semi.csv", HEADER.replace(",", ";") + "\nR0;0;0;h;a;b\n"),
        "looks ';'-separated",
    ),
    "tabs": (_text("tab.csv", HEADER.replace(",", "\t") + "\n"), "looks tab-separated"),
    "empty": (_text("empty.csv", ""), "the file is empty; expected a comma-separated CSV"),
    "header only": (_text("header.csv", HEADER + "\n"), "no patient rows"),
    "Excel": (_text("m.xlsx", b"PK\x03\x04 zipped sheets"), "looks like an Excel workbook"),
    "not UTF-8": (_text("latin.csv", HEADER.encode() + b"\nR\xe9,0,0,h,a,b\n"), "not UTF-8"),
    "folder": (lambda folder: folder, "is a folder; the manifest is one CSV file"),
    "missing": (lambda folder: folder / "absent.csv", "manifest file not found"),
    "no fold column": (
        _text("nofold.csv", "patient_id,pe_label,source,ct_path,cxr_path\n"),
        "column=fold: required column missing; to assign stratified folds run",
    ),
    "column twice": (
        _text("twice.csv", HEADER + ",fold\nR0,0,0,h,a,b,1\n"),
        "column(s) ['fold'] appear more than once",
    ),
    "extra field": (
        _text("extra.csv", HEADER + "\nR0,0,0,h,a,b,c\n"),
        "row 1 (line 2) patient_id='R0': 7 fields, the header has 6 (a comma inside a value",
    ),
    "typo in a column": (
        _text("typo.csv", HEADER.replace("ct_path", "ct path") + "\n"),
        "'ct path': a typo?",
    ),
}


@pytest.mark.parametrize("fault", list(BAD_MANIFESTS))
def test_bad_manifest_gets_one_line_with_a_hint(fault, tmp_path, capsys):
    make, words = BAD_MANIFESTS[fault]
    manifest = make(tmp_path)
    rc, out, err = _run(capsys, "validate-manifest", manifest)
    assert rc == 1
    _one_problem(out, err, str(manifest), words)
    run_dir = tmp_path / "run"
    rc, out, err = _run(capsys, "prepare", "--manifest", manifest, "--run-dir", run_dir)
    assert rc == 1 and not run_dir.exists()
    _one_problem(out, err, str(manifest), words)


def test_bom_is_accepted_and_duplicates_are_named(cohort, capsys):
    folder, df = cohort
    bom = folder / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + df.to_csv(index=False).encode())
    rc, out, err = _run(capsys, "validate-manifest", bom)
    assert rc == 0, out + err
    dup = write_manifest(pd.concat([df, df.iloc[[1]]]), folder / "dup.csv")
    rc, out, err = _run(capsys, "validate-manifest", dup)
    assert rc == 1
    _one_problem(out, err, "row 7", "'R1'", "duplicate patient (first in row 2)")


def test_make_folds_writes_a_new_valid_manifest(tmp_path, capsys):
    images = tmp_path / "images"
    df = write_cohort(images, n=12).drop(columns=["fold"])
    source = write_manifest(df, images / "nofold.csv")
    rc, out, err = _run(capsys, "validate-manifest", source)
    assert rc == 1 and "--make-folds" in out
    new = tmp_path / "with folds.csv"
    rc, out, err = _run(capsys, "validate-manifest", source, "--make-folds", new)
    assert rc == 0, out + err
    made = pd.read_csv(new)
    assert sorted(made.fold) == sorted(list(range(6)) * 2)
    assert (made.groupby("fold").pe_label.sum() == 1).all()  # stratified: one PE per fold
    assert made.ct_path[0] == "images/R0_ct.nii.gz"  # rebased to the new file's folder
    rc, out, _ = _run(capsys, "validate-manifest", new)
    assert rc == 0 and "valid (12 patients)" in out
    again = new.read_bytes()
    rc, out, err = _run(capsys, "validate-manifest", source, "--make-folds", new)
    assert rc == 1 and "exists" in err and new.read_bytes() == again
    few = write_manifest(df.iloc[:6], images / "six.csv")
    rc, out, err = _run(capsys, "validate-manifest", few, "--make-folds", tmp_path / "x.csv")
    assert rc == 1 and "need at least 6 patients of each label" in err
    assert not (tmp_path / "x.csv").exists()


def test_own_manifest_needs_a_run_dir_for_prepare(cohort, tmp_path, capsys):
    rc, out, err = _run(capsys, "prepare", "--manifest", _manifest(cohort, "norun.csv"))
    assert rc == 1 and "give --run-dir for your own manifest" in err


# ------------------------------------------------------------------------------- help


def test_help_lists_commands_in_order_and_every_option_has_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    shown = [c for c in COMMAND_ORDER if f"    {c} " in text]
    assert shown[:2] == ["validate-manifest", "prepare"]
    assert [text.index(f"    {c} ") for c in shown] == sorted(
        text.index(f"    {c} ") for c in shown
    )
    assert "``" not in text  # plain text, not reStructuredText
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("validate-manifest", "prepare", "run-notebooks"):
        page = sub.choices[name].format_help()
        for action in sub.choices[name]._actions:
            if not action.option_strings or action.dest in ("help", "debug"):
                continue
            assert action.help, (name, action.dest)
            if action.default not in (None, False):
                assert f"(default: {action.default})" in " ".join(page.split()), (name, action.dest)
            elif action.default is None:
                assert "default" in action.help, (name, action.dest)


def test_version_and_removed_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"xr2ct {__version__}"
    with pytest.raises(SystemExit) as e:
        main(["validate-manifest", "x.csv", "--seed", "3"])
    assert e.value.code == 2
    assert main([]) == 2 and "validate-manifest" in capsys.readouterr().err


def test_console_script_reports_without_traceback(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "m.json"
    bad.write_text(json.dumps([{"patient_id": "R0"}]))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "xr2ct_lib.cli",
            "prepare",
            "--manifest",
            str(bad),
            "--run-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "looks like JSON" in r.stderr and "Traceback" not in r.stderr
