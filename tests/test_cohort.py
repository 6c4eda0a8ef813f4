"""``prepare`` on a small real-format cohort (NIfTI CTs, PNG X-rays), and reading it back."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xr2ct_lib.config import PROFILES, RunConfig
from xr2ct_lib.data.cohort import PreparedCohort, prepare
from xr2ct_lib.data.manifest import ManifestError
from xr2ct_lib.files import write_nifti

PROFILE = dataclasses.replace(
    PROFILES["smoke"], ct_size=(8, 16, 16), ct_spacing_mm=3.0, cxr_size=16, max_patients=None
)


def ct_with_lungs(rng) -> np.ndarray:
    """A 1.5 mm CT in HU: a body box, two air-filled lungs, a contrast cube, some noise."""
    a = np.full((40, 64, 64), -1000.0, np.float32)
    a[4:36, 4:60, 2:62] = 40.0
    a[8:32, 16:48, 10:28] = -850.0
    a[8:32, 16:48, 36:54] = -850.0
    a[14:20, 20:28, 14:22] = 600.0
    return a + rng.normal(0, 5, a.shape).astype(np.float32)


def write_cohort(root, n=6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        pid = f"R{i}"
        write_nifti(root / f"{pid}_ct.nii.gz", ct_with_lungs(rng), (1.5, 1.5, 1.5))
        Image.fromarray(rng.integers(0, 255, (40, 32), dtype=np.uint8)).save(root / f"{pid}.png")
        drr = f"{pid}.png" if i < 2 else ""
        rows.append({"patient_id": pid, "pe_label": int(i % 3 == 0), "fold": i % 6,
                     "source": "mycohort", "ct_path": f"{pid}_ct.nii.gz",
                     "cxr_path": f"{pid}.png", "drr_path": drr})  # fmt: skip
    df = pd.DataFrame(rows)
    df.to_csv(root / "manifest.csv", index=False)
    return df


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    df = write_cohort(root)
    cfg = RunConfig(PROFILE, root / "manifest.csv", root / "run", seed=0)
    return cfg, df, prepare(cfg, workers=1, show_progress=False)


def test_the_clot_readers_ct_is_prepared_at_its_size_and_a_run_without_it_is_refused(
    prepared, tmp_path
):
    cfg, df, cohort = prepared
    ct, clot = cohort.reader_volumes(PROFILE)
    assert ct.shape == clot.shape == (len(df), *PROFILE.reader_size) != (len(df), *PROFILE.ct_size)
    assert ct.max() == pytest.approx(0.4, abs=0.05) and not clot.any()  # the cube, no clot
    coarse = dataclasses.replace(PROFILE, reader_ct_size=None)
    assert cohort.reader_keys(coarse) == ("ct", "clot")
    write_cohort(tmp_path)
    old = prepare(RunConfig(coarse, tmp_path / "manifest.csv", tmp_path / "run", seed=0),
                  workers=1, show_progress=False)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="prepared without the clot reader's"):
        old.reader_volumes(PROFILE)


def test_prepare_writes_every_patient_in_the_manifest_order(prepared):
    cfg, df, cohort = prepared
    assert cohort.ids == df.patient_id.tolist()
    np.testing.assert_array_equal(cohort.labels, df.pe_label)
    np.testing.assert_array_equal(cohort.folds, df.fold)
    a = cohort.load("R0")
    assert a["ct"].shape == a["lung"].shape == a["clot"].shape == PROFILE.ct_size
    assert a["ct"].dtype == np.float32 and -1 <= a["ct"].min() and a["ct"].max() <= 1
    assert a["ct"].max() == pytest.approx(0.4, abs=0.05)  # the 600 HU cube in −100…900 HU
    assert a["lung"].any() and not a["clot"].any()  # no clot mask in this cohort
    assert a["cxr"].shape == (3, 16, 16) and 0 <= a["cxr"].min() and a["cxr"].max() <= 1
    assert "drr" in a and "drr" not in cohort.load("R2")  # drr_path only for R0, R1
    assert json.loads((cfg.run_dir / "config.json").read_text())["profile"]["name"] == "smoke"


def test_prepare_again_reuses_what_is_unchanged(prepared):
    cfg, df, _ = prepared
    files = {p: cfg.run_dir / "prepared" / f"{p}.safetensors" for p in df.patient_id}
    before = {p: f.stat().st_mtime_ns for p, f in files.items()}
    df.loc[df.patient_id == "R4", "pe_label"] = 1  # a changed row is preprocessed again
    df.to_csv(cfg.manifest, index=False)
    try:
        cohort = prepare(cfg, workers=1, show_progress=False)
    finally:
        df.loc[df.patient_id == "R4", "pe_label"] = 0
        df.to_csv(cfg.manifest, index=False)
    changed = [p for p, f in files.items() if f.stat().st_mtime_ns != before[p]]
    assert changed == ["R4"] and cohort.labels.tolist() == [1, 0, 0, 1, 1, 0]


def test_a_bad_row_stops_prepare_before_any_work(tmp_path):
    df = write_cohort(tmp_path, n=3)
    df.loc[1, "fold"] = 9
    df.to_csv(tmp_path / "manifest.csv", index=False)
    cfg = RunConfig(PROFILE, tmp_path / "manifest.csv", tmp_path / "run", seed=0)
    with pytest.raises(ManifestError, match=r"row 2 \(line 3\) patient_id='R1' column=fold"):
        prepare(cfg, workers=1, show_progress=False)
    assert not (tmp_path / "run" / "prepared").exists()


def test_prepared_cohort_cache_is_bounded_and_stack_reads_one_array(prepared):
    cfg, df, _ = prepared
    cohort = PreparedCohort(cfg.run_dir, cache_size=2)
    full = {p: cohort.load(p) for p in cohort.ids}
    assert len(cohort._cache) == 2 and list(cohort._cache) == cohort.ids[-2:]
    cohort.load(cohort.ids[-2])  # a hit moves to the most recent end
    assert list(cohort._cache) == [cohort.ids[-1], cohort.ids[-2]]
    cold = PreparedCohort(cfg.run_dir, cache_size=0)
    stacked = cold.stack("cxr", [4, 0])
    np.testing.assert_array_equal(stacked, np.stack([full["R4"]["cxr"], full["R0"]["cxr"]]))
    assert len(cold._cache) == 0
    split = cold.split(PROFILE)  # test fold 0, validation fold 1
    assert cold.split_ids(PROFILE, "test") == ["R0"] and split["val"].tolist() == [1]
    assert sorted(split["train"].tolist()) == [2, 3, 4, 5]
