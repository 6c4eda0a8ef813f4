"""Manifest validation names every planted fault's row, column and problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from real_cohort import chest, write_cohort, write_manifest, write_volume, write_xray

from xr2ct_lib.config import DEFAULT_MANIFEST
from xr2ct_lib.data import manifest as mf
from xr2ct_lib.data import manifest_files as mff


def _ct(path: Path, shape=(8, 16, 16)) -> str:
    return write_volume(path, chest(shape)[0])


def _png(path: Path) -> str:
    return write_xray(path, chest()[0])


@pytest.fixture
def real_cohort(tmp_path: Path) -> pd.DataFrame:
    return write_cohort(tmp_path, labels=False)


def _write(df: pd.DataFrame, tmp_path: Path) -> Path:
    return write_manifest(df, tmp_path / "manifest.csv")


def test_valid_manifest_has_no_problems(real_cohort, tmp_path):
    assert mff.validate(_write(real_cohort, tmp_path)) == []


def _set(df: pd.DataFrame, index: int, column: str, value) -> pd.DataFrame:
    df = df.astype({column: object})
    df.loc[index, column] = value
    return df


def _unreadable(df, d):
    d.joinpath("bad.nii.gz").write_bytes(b"not an image")
    return _set(df, 3, "ct_path", "bad.nii.gz")


def _duplicate(df, d):
    return pd.concat([df, df.iloc[[1]]], ignore_index=True)


def _two_folds(df, d):
    return pd.concat([df, df.iloc[[1]].assign(fold=4)], ignore_index=True)


# fault -> (plant(df, dir), 0-based row index, column, words in the message)
PLANTED = {
    "missing file": (
        lambda df, d: _set(df, 2, "ct_path", "nope.nii.gz"),
        2,
        "ct_path",
        "not found",
    ),
    "unreadable file": (_unreadable, 3, "ct_path", "cannot read the NIfTI header"),
    "duplicate patient": (_duplicate, 6, "patient_id", "duplicate"),
    "patient in two folds": (_two_folds, 6, "fold", "two folds"),
    "label not 0/1": (lambda df, d: _set(df, 4, "pe_label", "2"), 4, "pe_label", "0 or 1"),
    "fold out of range": (lambda df, d: _set(df, 5, "fold", 6), 5, "fold", "0–5"),
    "CT not 3D": (
        lambda df, d: _set(df, 0, "ct_path", _png(d / "flat.png")),
        0,
        "ct_path",
        "must be 3D",
    ),
    "CXR not 2D": (
        lambda df, d: _set(df, 1, "cxr_path", _ct(d / "vol.nii.gz")),
        1,
        "cxr_path",
        "must be 2D",
    ),
}


@pytest.mark.parametrize("fault", sorted(PLANTED))
def test_each_planted_fault_is_named(fault, real_cohort, tmp_path):
    plant, index, column, words = PLANTED[fault]
    df = plant(real_cohort.copy(), tmp_path)
    problems = mff.validate(_write(df, tmp_path))
    assert len(problems) == 1, problems
    (p,) = problems
    assert p.row == index + 1
    assert p.patient_id == df.iloc[index]["patient_id"]
    assert p.column == column
    assert words in p.message
    assert f"patient_id='{p.patient_id}'" in str(p) and column in str(p)


def test_cli_rejects_each_fault_and_names_the_row(real_cohort, tmp_path):
    df = PLANTED["label not 0/1"][0](real_cohort.copy(), tmp_path)
    df = PLANTED["fold out of range"][0](df, tmp_path)
    path = _write(df, tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "xr2ct_lib.cli",
        "validate-manifest",
        str(path),
        "--run-dir",
        str(tmp_path),
    ]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 1
    lines = bad.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "patient_id='R4'" in lines[0] and "pe_label" in lines[0]
    assert "patient_id='R5'" in lines[1] and "fold" in lines[1]
    good = subprocess.run(
        cmd[:4] + [str(_write(real_cohort, tmp_path))] + cmd[5:], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stdout + good.stderr


def test_missing_column_and_missing_manifest(tmp_path):
    df = pd.DataFrame({"patient_id": ["a"], "pe_label": [1]})
    problems = mff.validate(_write(df, tmp_path))
    assert {p.column for p in problems} == {"fold", "source", "ct_path", "cxr_path"}
    assert "not found" in mff.validate(tmp_path / "absent.csv")[0].message


def test_phantom_rows_need_a_seed_and_their_files_once_required(tmp_path):
    df = mf.make_phantom_manifest(n_patients=12, seed=1).astype({"phantom_seed": object})
    df.loc[3, "phantom_seed"] = "x"
    path = _write(df, tmp_path)
    problems = mff.validate(path, run_dir=tmp_path)
    assert [(p.row, p.column) for p in problems] == [(4, "phantom_seed")]
    df.loc[3, "phantom_seed"] = 7
    problems = mff.validate(_write(df, tmp_path), run_dir=tmp_path, require_phantom_files=True)
    assert len(problems) == 12 * 5 and all("not found" in p.message for p in problems)


def test_committed_manifest_is_the_embedded_cohort():
    df = mff.check(DEFAULT_MANIFEST, check_files=False)
    assert len(df) == df.patient_id.nunique() == 120
    assert (df.source == "phantom").all()
    assert 0.30 <= df.pe_label.mean() <= 0.38
    assert sorted(df.fold.unique()) == list(range(6))
    # stratified: each fold's PE count within one patient of the others
    per_fold = df.groupby("fold").pe_label.sum()
    assert per_fold.max() - per_fold.min() <= 1
    assert mf.make_phantom_manifest().equals(pd.read_csv(DEFAULT_MANIFEST))


def test_profile_subset_is_balanced():
    df = mff.check(DEFAULT_MANIFEST, check_files=False)
    sub = mf.select_for_profile(df, 24)
    assert len(sub) == 24
    assert sorted(sub.fold.value_counts()) == [4] * 6
    assert sub.groupby("fold").pe_label.sum().min() >= 1
    assert mf.select_for_profile(df, None).equals(df)
