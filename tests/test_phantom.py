"""The simulated PE cohort: determinism, clots in vessels, signs, radiographs, files, cache."""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from xr2ct_lib.config import PROFILES, RunConfig
from xr2ct_lib.data.cohort import load_signs
from xr2ct_lib.data.drr import make_subject, normalize01, render
from xr2ct_lib.data.phantom import (
    SIGN_PROBABILITIES,
    SIGNS,
    build_cohort,
    load_base,
    read_png16,
    simulate_patient,
)

SPACING = 4.0
SIZE = 48


@pytest.fixture(scope="module")
def base():
    return load_base(SPACING)


def _manifest(n: int, seed0: int = 100) -> pd.DataFrame:
    rows = []
    for i in range(n):
        pid = f"P{i:04d}"
        rows.append(
            dict(
                patient_id=pid,
                pe_label=i % 2,
                fold=i % 6,
                source="phantom",
                ct_path=f"cohort/{pid}_ct.nii.gz",
                cxr_path=f"cohort/{pid}_cxr.png",
                drr_path=f"cohort/{pid}_drr.png",
                label_path=f"cohort/{pid}_labels.nii.gz",
                clot_path=f"cohort/{pid}_clot.nii.gz",
                phantom_seed=seed0 + i,
            )  # fmt: skip
        )
    return pd.DataFrame(rows)


def test_base_is_lps_and_vessels_enhanced(base):
    assert base.ct_hu.ndim == 3 and base.labels.shape == base.ct_hu.shape
    vessel_hu = base.ct_hu[base.vessel_mask]
    assert base.vessel_mask.sum() > 50 and np.median(vessel_hu) > 150
    # LPS: the liver (label 5) lies on the patient's right (low x) and low (low z)
    liver = np.argwhere(base.labels == 5).mean(0)
    lungs = np.argwhere(np.isin(base.labels, [10, 11, 12, 13, 14])).mean(0)
    assert liver[2] < base.shape[2] / 2 and liver[0] < lungs[0]
    # heart in front of the spine (low y = anterior)
    heart = np.argwhere(base.labels == 51).mean(0)
    spine = np.argwhere((base.labels >= 25) & (base.labels <= 50)).mean(0)
    assert heart[1] < spine[1]
    # the vessel mask holds no bone and no aorta
    assert not np.isin(base.labels[base.vessel_mask], [52, 116] + list(range(25, 51))).any()


def test_same_seed_identical_different_seed_differs(base):
    a = simulate_patient(7, 1, base, SIZE)
    b = simulate_patient(7, 1, base, SIZE)
    c = simulate_patient(8, 1, base, SIZE)
    for f in ("ct_hu", "labels", "clot_mask", "cxr", "drr"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert a.signs == b.signs
    assert not np.array_equal(a.ct_hu, c.ct_hu)
    assert not np.array_equal(a.cxr, c.cxr)
    assert a.ct_hu.dtype == np.float32 and a.labels.dtype == np.uint8
    assert a.clot_mask.dtype == np.uint8 and a.cxr.shape == a.drr.shape == (SIZE, SIZE)
    for img in (a.cxr, a.drr):
        assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1


def test_clots_in_vessels_lower_hu(base):
    counts = []
    for seed in range(6):
        p = simulate_patient(seed, 1, base, SIZE)
        clot = p.clot_mask.astype(bool)
        assert 1 <= p.signs["n_clots"] <= 4 and len(p.signs["clots"]) == p.signs["n_clots"]
        assert clot.any() and np.all(p.vessel_mask[clot] == 1)
        counts.append(p.signs["n_clots"])
        assert p.ct_hu[clot].mean() < 100
        for c in p.signs["clots"]:
            assert c["prior_mean_hu"] > 120 and 20 <= c["hu"] <= 60
        # the same seed without PE: same anatomy when the deforming sign matches
        q = simulate_patient(seed, 0, base, SIZE)
        assert q.signs["n_clots"] == 0 and not q.clot_mask.any()
        if q.signs["rv_enlargement"] == p.signs["rv_enlargement"]:
            assert np.array_equal(q.labels, p.labels)
            assert q.ct_hu[clot].mean() > p.ct_hu[clot].mean() + 100
    assert len(set(counts)) > 1


def test_cxr_is_not_the_registered_drr(base):
    p = simulate_patient(3, 0, base, SIZE)
    r = np.corrcoef(p.cxr.ravel(), p.drr.ravel())[0, 1]
    assert r < 0.95
    # a clean DRR is strongly tied to the CT: another patient's DRR resembles it more
    # than the CXR's pose and degradation do
    q = simulate_patient(4, 0, base, SIZE)
    assert np.corrcoef(p.drr.ravel(), q.drr.ravel())[0, 1] > r
    assert max(abs(v) for v in p.signs["cxr_render"]["pose_rotations_deg"]) > 0.1


def test_radiograph_orientation():
    """Upright (head at the top), patient right on the image left, dense = bright."""
    vol = np.full((40, 40, 40), -1000.0, dtype=np.float32)  # (z, y, x) LPS, 5 mm voxels
    vol[4:36, 10:30, 4:36] = 0.0  # a water block
    vol[30:36, 15:25, 28:36] = 1500.0  # superior (high z), patient left (high x)
    subject = make_subject(vol, 5.0)
    img = normalize01(render(subject, 32, fov_mm=220.0))
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert r < 12 and c > 20  # top, image right
    assert img[r, c] == 1.0 and img[r, 31 - c] < 0.7  # mirror point: water only


def test_phantom_drr_looks_like_a_chest(base):
    """Lungs (upper lateral fields) darker than the mediastinum and spine between them."""
    d = simulate_patient(0, 0, base, 64).drr
    upper = d[16:36]
    assert upper[:, 8:22].mean() < upper[:, 28:36].mean()
    assert upper[:, 42:56].mean() < upper[:, 28:36].mean()


def test_build_cohort_files_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XR2CT_NO_PROGRESS", "1")
    prof = replace(PROFILES["smoke"], ct_spacing_mm=SPACING, drr_size=SIZE)
    cfg = RunConfig(profile=prof, manifest=tmp_path / "m.csv", run_dir=tmp_path)
    m = _manifest(3)
    m.loc[3] = m.loc[0].copy()
    m.loc[3, ["patient_id", "source"]] = ["R0001", "rspect"]  # not a phantom row: ignored
    df = build_cohort(cfg, m)
    assert list(df.patient_id) == ["P0000", "P0001", "P0002"]
    assert set(SIGNS) <= set(df.columns) and "n_clots" in df.columns
    assert (df.n_clots[m.pe_label[:3] == 0] == 0).all() and (
        df.n_clots[m.pe_label[:3] == 1] >= 1
    ).all()
    base = load_base(SPACING)
    row = m.loc[1]
    ct = sitk.ReadImage(str(tmp_path / row.ct_path))
    assert ct.GetSpacing() == pytest.approx((SPACING,) * 3)
    assert sitk.GetArrayFromImage(ct).shape == base.shape
    assert ct.GetPixelID() == sitk.sitkInt16
    assert ct.GetOrigin() == pytest.approx(base.origin_lps, abs=1e-3)
    # nibabel reads the same grid: RAS affine with LPS-flipped x, y
    img = nib.load(tmp_path / row.ct_path)
    assert np.allclose(np.diag(img.affine)[:3], [-SPACING, -SPACING, SPACING])
    clot = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / row.clot_path)))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / row.label_path)))
    assert clot.dtype == np.uint8 and lab.dtype == np.uint8 and clot.sum() > 0
    p = simulate_patient(int(row.phantom_seed), 1, base, SIZE)
    assert np.array_equal(clot, p.clot_mask)
    assert np.array_equal(sitk.GetArrayFromImage(ct), np.round(p.ct_hu).astype(np.int16))
    cxr = read_png16(tmp_path / row.cxr_path)
    assert cxr.shape == (SIZE, SIZE) and np.abs(cxr - p.cxr).max() < 1e-4
    side = json.loads((tmp_path / "cohort" / "P0001_signs.json").read_text())
    assert side["phantom_seed"] == row.phantom_seed and side["drr_size"] == SIZE
    assert not list(tmp_path.rglob(".*.nii.gz")) and not list(tmp_path.rglob(".*.png"))

    # cache: nothing is rewritten on a second build; a stale sidecar forces a rebuild
    stamp = {f: f.stat().st_mtime_ns for f in (tmp_path / "cohort").iterdir()}
    df2 = build_cohort(cfg, m)
    pd.testing.assert_frame_equal(df, df2)
    assert stamp == {f: f.stat().st_mtime_ns for f in (tmp_path / "cohort").iterdir()}
    side["phantom_seed"] = 999
    (tmp_path / "cohort" / "P0001_signs.json").write_text(json.dumps(side))
    build_cohort(cfg, m)
    assert (tmp_path / row.ct_path).stat().st_mtime_ns != stamp[tmp_path / row.ct_path]
    assert (tmp_path / m.loc[0].ct_path).stat().st_mtime_ns == stamp[tmp_path / m.loc[0].ct_path]

    # the sign table the notebooks read back: the SIGNS columns only, 0/1, by patient
    assert load_signs(tmp_path / "no-cohort").empty
    df.to_csv(tmp_path / "cohort" / "signs.csv", index=False)  # as prepare() writes it
    got = load_signs(tmp_path)
    assert list(got.columns) == list(SIGNS) and list(got.index) == list(df.patient_id)
    assert got.isin([0, 1]).all().all()
    np.testing.assert_array_equal(got.to_numpy(), df[list(SIGNS)].to_numpy())


def test_bad_manifest_row_named(tmp_path):
    prof = replace(PROFILES["smoke"], ct_spacing_mm=SPACING, drr_size=SIZE)
    cfg = RunConfig(profile=prof, manifest=tmp_path / "m.csv", run_dir=tmp_path)
    m = _manifest(2)
    m.loc[1, "pe_label"] = 3
    with pytest.raises(ValueError, match="P0001.*pe_label"):
        build_cohort(cfg, m)


@pytest.mark.slow
def test_sign_frequencies_by_label(base):
    """Over 40 distinct patients, signs are more frequent with PE; applied signs change the CT."""
    n = 20
    freq = {0: np.zeros(len(SIGNS)), 1: np.zeros(len(SIGNS))}
    for label, seed0 in ((0, 500), (1, 700)):
        for seed in range(seed0, seed0 + n):
            s = simulate_patient(seed, label, base, 32).signs
            freq[label] += [s[k] for k in SIGNS]
            assert set(s["details"]) == {k for k in SIGNS if s[k]}
            if s["effusion"]:
                assert s["details"]["effusion"]["volume_ml"] > 0
            if s["infarct"]:
                assert s["details"]["infarct"]["voxels"] > 0
    diff = (freq[1].sum() - freq[0].sum()) / n
    expected = sum(SIGN_PROBABILITIES[1].values()) - sum(SIGN_PROBABILITIES[0].values())
    assert 0.2 < diff < expected + 0.5


def test_signs_change_the_lungs(base):
    """A seed simulated with and without PE shares its sign draws; signs add lung density
    (infarct, effusion) or remove it (oligemia) only where they are applied."""
    for seed in range(40):
        p, q = (simulate_patient(seed, label, base, 32) for label in (1, 0))
        if p.signs["rv_enlargement"] == q.signs["rv_enlargement"] and (
            p.signs["infarct"] + p.signs["effusion"] > q.signs["infarct"] + q.signs["effusion"]
            and p.signs["oligemia"] == q.signs["oligemia"]
        ):
            lung = np.isin(p.labels, [10, 11, 12, 13, 14]) & ~p.clot_mask.astype(bool)
            assert np.array_equal(p.labels, q.labels)
            diff = p.ct_hu[lung] - q.ct_hu[lung]
            changed = np.abs(diff) > 1.0
            assert changed.sum() >= 3 and (diff[changed] > 0).all()
            assert not np.array_equal(p.drr, q.drr)
            return
    pytest.fail("no seed in 0..39 with an extra dense sign under PE")
