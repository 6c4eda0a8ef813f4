"""The simulated cohort (phantom 2.x): source anatomy, determinism, clots, signs measured on
the generated anatomy, an X-ray without iodine, files, cache and the records table."""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from xr2ct_lib.config import PROFILES, RunConfig
from xr2ct_lib.data.cohort import load_records, load_signs, preprocess_row
from xr2ct_lib.data.drr import make_subject, normalize01, render
from xr2ct_lib.data.phantom import (
    CODE,
    SIGNS,
    build_cohort,
    findings_of,
    findings_path,
    load_base,
    measure,
    min_clot_z_mm,
    read_png16,
    simulate_ct_batch,
    simulate_patient,
)
from xr2ct_lib.data.phantom.clots import CLASS_GEOMETRY
from xr2ct_lib.data.phantom.model import CASTS

SPACING = 4.0  # the smoke profile's simulation spacing
SIZE = 48
PROFILE = replace(PROFILES["smoke"], drr_size=SIZE)


@pytest.fixture(scope="module")
def base():
    return load_base(SPACING)


def _seed(label: int, **want) -> int:
    """The first seed whose drawn findings match ``want`` (cheap: nothing is simulated)."""
    return next(
        s for s in range(20000) if all(findings_of(s, label)[k] == v for k, v in want.items())
    )


def _manifest(seeds, labels) -> pd.DataFrame:
    rows = []
    for i, (seed, label) in enumerate(zip(seeds, labels, strict=True)):
        pid = f"P{i:04d}"
        rows.append(
            dict(
                patient_id=pid,
                pe_label=label,
                fold=i % 6,
                source="phantom",
                ct_path=f"cohort/{pid}_ct.nii.gz",
                cxr_path=f"cohort/{pid}_cxr.png",
                drr_path=f"cohort/{pid}_drr.png",
                label_path=f"cohort/{pid}_labels.nii.gz",
                clot_path=f"cohort/{pid}_clot.nii.gz",
                phantom_seed=seed,
            )  # fmt: skip
        )
    return pd.DataFrame(rows)


def test_source_anatomy_lps_arteries_and_chambers(base):
    lab, codes = base.labels, base.codes
    # LPS: the liver (5) lies on the patient's right (low x) and low (low z)
    liver = np.argwhere(lab == 5).mean(0)
    lungs = np.argwhere(np.isin(lab, [10, 11, 12, 13, 14])).mean(0)
    assert liver[2] < base.shape[2] / 2 and liver[0] < lungs[0]
    # arteries: enhanced, no aorta, bone or atrium in them, trunk above the chambers
    trunk = codes == CODE["pulmonary_trunk"]
    assert base.arteries.sum() > 200 and np.median(base.ct_hu[trunk]) > 200
    assert not np.isin(lab[base.arteries], [52, 116] + list(range(25, 51))).any()
    rv, lv = (np.argwhere(codes == CODE[k]).mean(0) for k in ("right_ventricle", "left_ventricle"))
    assert np.argwhere(trunk).mean(0)[0] > max(rv[0], lv[0])
    # the RV lies in front of (low y) and to the right of (low x) the LV; RV/LV < 1
    assert rv[1] < lv[1] and rv[2] < lv[2]
    d_rv, d_lv = base.aux["ventricle_diameters"]
    assert 0.8 < d_rv / d_lv < 1.05
    # the iodine split: without it the trunk's blood is unenhanced (≈ 40 HU)
    core = trunk & (base.aux["lumen_depth"] >= 2 * SPACING)
    assert abs(np.median(base.plain_hu[core]) - 40) < 10
    assert np.median(base.enhancement[core]) > 150


def test_same_seed_identical_different_seed_differs(base):
    a, b, c = (simulate_patient(s, 1, base, SIZE) for s in (7, 7, 8))
    for f in ("ct_hu", "plain_hu", "labels", "findings", "clot_mask", "cxr", "drr"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert a.record == b.record and a.clots == b.clots
    assert not np.array_equal(a.ct_hu, c.ct_hu) and not np.array_equal(a.cxr, c.cxr)
    assert a.ct_hu.dtype == np.float32 and a.labels.dtype == np.uint8
    for img in (a.cxr, a.drr):
        assert img.shape == (SIZE, SIZE) and img.min() >= 0 and img.max() <= 1


@pytest.mark.parametrize("burden", ["central", "lobar", "segmental"])
def test_clots_are_filling_defects_along_the_arteries(base, burden):
    seed = _seed(1, burden=burden, rv_strain=0, lv_cardiomegaly=0, pa_enlargement=0)
    p = simulate_patient(seed, 1, base, SIZE, min_clot_z_mm=12.0, render=False)
    q = simulate_patient(seed, 0, base, SIZE, min_clot_z_mm=12.0, render=False)
    lo, hi = CASTS[burden]
    assert p.record["burden"] == burden and lo <= p.record["n_clots"] <= hi
    clot = p.clot_mask > 0
    assert clot.sum() == p.record["clot_voxels"] > 0 and not q.clot_mask.any()
    # inside the (deformed) pulmonary arteries, and seeded at the class's lumen radius
    assert p.vessel_mask[clot].mean() > 0.95
    for c in p.clots:
        r_lo, r_hi = CLASS_GEOMETRY[burden]["seed_radius"]
        assert r_lo <= c["seed_radius_mm"] < r_hi
        assert c["z_span_mm"] >= 12.0 and c["voxels"] > 0
    # no heart or trunk displacement drawn for either label: the same anatomy, and the
    # clot replaces enhanced blood (central/lobar) or its partial-volume share (segmental)
    assert np.array_equal(p.labels, q.labels)
    drop = (q.ct_hu[clot] - p.ct_hu[clot]).mean()
    assert drop > {"central": 100, "lobar": 60, "segmental": 15}[burden]
    assert abs(np.median(p.plain_hu[clot]) - np.median(q.plain_hu[clot])) < 40


def test_xray_has_no_iodine(base):
    seed = _seed(1, burden="central")
    lo = simulate_patient(seed, 1, base, SIZE, contrast_scale=0.7)
    hi = simulate_patient(seed, 1, base, SIZE, contrast_scale=1.25)
    # the bolus timing changes the CT and the DRR (rendered from the CTPA), not the X-ray
    assert np.array_equal(lo.cxr, hi.cxr) and np.array_equal(lo.plain_hu, hi.plain_hu)
    assert not np.array_equal(lo.drr, hi.drr)
    iodine = (hi.ct_hu - lo.ct_hu) / (1.25 - 0.7)  # enhancement at contrast 1 (noise cancels)
    pool = iodine > 100
    assert pool.sum() > 500 and abs(np.median(hi.plain_hu[pool]) - 40) < 15
    # projected attenuation through the blood pool: the X-ray's volume equals the same body
    # with its blood at 40 HU, while the CTPA's holds the iodine
    ref = np.where(pool, 40.0, hi.plain_hu).astype(np.float32)
    proj = {k: render(make_subject(v, SPACING), 64, fov_mm=400.0)
            for k, v in {"xray": hi.plain_hu, "ref": ref, "ct": hi.ct_hu}.items()}  # fmt: skip
    heart = render(make_subject(pool.astype(np.float32) * 1000 - 1000, SPACING), 64, fov_mm=400.0)
    region = heart > np.percentile(heart, 90)  # rays through the most blood
    iodine_signal = (proj["ct"] - proj["ref"])[region].mean()
    assert iodine_signal > 5.0  # mm water-equivalent
    assert abs((proj["xray"] - proj["ref"])[region].mean()) < 0.05 * iodine_signal


def test_cxr_is_not_the_registered_drr(base):
    p, q = simulate_patient(3, 0, base, SIZE), simulate_patient(4, 0, base, SIZE)
    r = np.corrcoef(p.cxr.ravel(), p.drr.ravel())[0, 1]
    assert r < 0.95
    assert np.corrcoef(p.drr.ravel(), q.drr.ravel())[0, 1] > r
    assert max(abs(p.record[f"cxr_pose_rotations_deg_{i}"]) for i in range(3)) > 0.1


def test_radiograph_orientation():
    """Upright (head at the top), patient right on the image left, dense = bright."""
    vol = np.full((40, 40, 40), -1000.0, dtype=np.float32)  # (z, y, x) LPS, 5 mm voxels
    vol[4:36, 10:30, 4:36] = 0.0  # a water block
    vol[30:36, 15:25, 28:36] = 1500.0  # superior (high z), patient left (high x)
    img = normalize01(render(make_subject(vol, 5.0), 32, fov_mm=220.0))
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert r < 12 and c > 20  # top, image right
    assert img[r, c] == 1.0 and img[r, 31 - c] < 0.7  # mirror point: water only


def test_phantom_drr_looks_like_a_chest(base):
    """Lungs (upper lateral fields) darker than the mediastinum and spine between them."""
    d = simulate_patient(0, 0, base, 64).drr
    upper = d[16:36]
    assert upper[:, 8:22].mean() < upper[:, 28:36].mean()
    assert upper[:, 42:56].mean() < upper[:, 28:36].mean()


def test_build_files_records_measured_and_cached(tmp_path, monkeypatch, base):
    monkeypatch.setenv("XR2CT_NO_PROGRESS", "1")
    cfg = RunConfig(profile=PROFILE, manifest=tmp_path / "m.csv", run_dir=tmp_path)
    seeds = [
        _seed(1, rv_strain=1, pa_enlargement=1, lv_cardiomegaly=0, bilateral_effusion=0),
        _seed(0, lv_cardiomegaly=1, rv_strain=0, pa_enlargement=0, bilateral_effusion=1),
        _seed(1, effusion=1, bilateral_effusion=0, rv_strain=0, lv_cardiomegaly=0,
              pa_enlargement=0),
    ]  # fmt: skip
    m = _manifest(seeds, [1, 0, 1])
    m.loc[3] = m.loc[0].copy()
    m.loc[3, ["patient_id", "source"]] = ["R0001", "rspect"]  # not a phantom row: ignored
    df = build_cohort(cfg, m)
    assert list(df.patient_id) == ["P0000", "P0001", "P0002"]
    assert set(SIGNS) <= set(df.columns) and {"burden", "rv_lv_ratio", "contrast_scale"} < set(
        df.columns
    )
    assert (df.n_clots[[0, 2]] >= 1).all() and df.n_clots[1] == 0

    # the measurements in the record are those of the written files
    for i, row in m.iloc[:3].iterrows():
        findings = sitk.GetArrayFromImage(sitk.ReadImage(str(findings_path(tmp_path, row))))
        clot = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / row.clot_path)))
        again = measure(findings, clot, base)
        for k, v in again.items():
            assert df.loc[i, k] == pytest.approx(v, abs=1e-6), (row.patient_id, k)
    rec = df.set_index("patient_id")
    d_rv, d_lv = base.aux["ventricle_diameters"]
    assert rec.loc["P0000", "rv_lv_ratio"] > 1.05 > d_rv / d_lv
    assert rec.loc["P0000", "pa_diameter_mm"] > base.aux["trunk_diameter"] + 2.0
    assert rec.loc["P0001", "rv_lv_ratio"] < 0.85
    assert min(rec.loc["P0001", ["effusion_left_ml", "effusion_right_ml"]]) > 120
    assert 120 < rec.loc["P0002", "effusion_ml"] < 450

    row = m.loc[0]
    ct = sitk.ReadImage(str(tmp_path / row.ct_path))
    assert ct.GetSpacing() == pytest.approx((SPACING,) * 3) and ct.GetPixelID() == sitk.sitkInt16
    assert sitk.GetArrayFromImage(ct).shape == base.shape
    assert ct.GetOrigin() == pytest.approx(base.origin_lps, abs=1e-3)
    img = nib.load(tmp_path / row.ct_path)  # nibabel: RAS affine with LPS-flipped x, y
    assert np.allclose(np.diag(img.affine)[:3], [-SPACING, -SPACING, SPACING])
    min_z = min_clot_z_mm(base, PROFILE.ct_size[0])
    p = simulate_patient(int(row.phantom_seed), 1, base, SIZE, min_clot_z_mm=min_z)
    assert np.array_equal(sitk.GetArrayFromImage(ct), np.round(p.ct_hu).astype(np.int16))
    assert np.abs(read_png16(tmp_path / row.cxr_path) - p.cxr).max() < 1e-4
    side = json.loads((tmp_path / "cohort" / "P0000_record.json").read_text())
    assert side["phantom_seed"] == row.phantom_seed and side["record"]["n_clots"] == len(
        side["clots"]
    )
    assert not list(tmp_path.rglob(".*.nii.gz")) and not list(tmp_path.rglob(".*.png"))
    # the in-memory CT-only path gives the prepared cohort's tensors
    batch = simulate_ct_batch([row.phantom_seed], [1], PROFILE, with_cxr=True)
    prepared = preprocess_row({**row.to_dict(), "source": "phantom"}, cfg)
    np.testing.assert_allclose(batch.ct[0], prepared["ct"], atol=1e-6)
    assert np.array_equal(batch.clot[0], prepared["clot"])
    np.testing.assert_allclose(batch.cxr[0], prepared["cxr"], atol=1e-5)  # X-ray too
    assert simulate_ct_batch([row.phantom_seed], [1], PROFILE).cxr is None

    # cache: nothing is rewritten on a second build; a stale sidecar forces a rebuild
    stamp = {f: f.stat().st_mtime_ns for f in (tmp_path / "cohort").iterdir()}
    pd.testing.assert_frame_equal(df, build_cohort(cfg, m))
    assert stamp == {f: f.stat().st_mtime_ns for f in (tmp_path / "cohort").iterdir()}
    side["phantom_seed"] = 999
    (tmp_path / "cohort" / "P0000_record.json").write_text(json.dumps(side))
    build_cohort(cfg, m)
    assert (tmp_path / row.ct_path).stat().st_mtime_ns != stamp[tmp_path / row.ct_path]
    p1 = tmp_path / m.loc[1].ct_path
    assert p1.stat().st_mtime_ns == stamp[p1]

    # the records table as prepare() writes it, read back by load_records / load_signs
    assert load_records(tmp_path / "nothing").empty and load_signs(tmp_path / "nothing").empty
    df.to_csv(tmp_path / "cohort" / "records.csv", index=False)
    got = load_records(tmp_path)
    assert list(got.index) == list(df.patient_id) and got["rv_lv_ratio"].equals(
        df.set_index("patient_id")["rv_lv_ratio"]
    )
    assert list(load_signs(tmp_path).columns) == list(SIGNS)


def test_bad_manifest_row_named(tmp_path):
    cfg = RunConfig(profile=PROFILE, manifest=tmp_path / "m.csv", run_dir=tmp_path)
    m = _manifest([1, 2], [0, 1])
    m.loc[1, "pe_label"] = 3
    with pytest.raises(ValueError, match="P0001.*pe_label"):
        build_cohort(cfg, m)
