"""Table 1 on fresh simulated patients (:mod:`xr2ct_lib.eval.fresh`): real networks on real
simulated patients, at the smoke size."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from xr2ct_lib.config import PROFILES, WEIGHTS_DIR
from xr2ct_lib.eval import fresh as F

SMOKE = PROFILES["smoke"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("XR2CT_NO_PROGRESS", "1")


def test_fresh_benchmark_reads_every_row_records_and_refuses_stale(tmp_path):
    bundle = tmp_path / "smoke"
    shutil.copytree(WEIGHTS_DIR / "smoke", bundle)
    rec = F.fresh_benchmark(SMOKE, bundle, patients=12, k=2)
    assert rec["patients"] == 12 and 0 < rec["pe_patients"] < 12
    rows = rec["rows"]
    assert len(rows) == 9  # X-ray, 2 real, reconstruction, 2 generated, tuned, 2 means of k
    for name, r in rows.items():
        assert 0 <= r["lo"] <= r["auc"] <= r["hi"] <= 1, name
        assert ("p_vs_xray" in r) == (name != "X-ray reader (X-ray)")
    assert set(rec["ceilings"]) >= {c for c in rec["ceilings"] if c.startswith("shared")}
    seeds = rec["seeds"]
    from xr2ct_lib.train.pretrained import check_disjoint

    check_disjoint("fresh_benchmark", np.arange(seeds[0], seeds[1] + 1))
    F.save_record(bundle, rec)
    assert F.load_record(bundle)["rows"] == json.loads(json.dumps(rows))
    table = F.record_table(rec)
    assert "ceiling: " + next(iter(rec["ceilings"])) in table.index
    text = F.reading(rec)
    assert "DeLong p" in text
    recon = rows[F.RECON]  # the clot reader on the real latents decoded: the latents' ceiling
    assert f"reconstruction of it, decoded from the latents, at {recon['auc']:.2f}" in text
    from xr2ct_lib.eval.sign_measures import SIGNS

    assert set(rec["signs"]) == set(SIGNS.values())
    for name, r in rec["signs"].items():  # the probe on the real CTPA follows each sign
        assert np.isfinite(r["real: ρ with truth"]) and name in text
    cu = rec["condition_use"]
    assert cu["patients"] == 12 and [r["timestep"] for r in cu["rows"]] == [200, 500, 800, 950]
    assert all(r["gain_lo"] <= r["gain"] <= r["gain_hi"] for r in cu["rows"])
    assert "own X-ray" in text
    # other weights: the record is refused with the command to rerun
    (bundle / "denoiser" / "config.json").write_text(
        (bundle / "denoiser" / "config.json").read_text() + " "
    )
    with pytest.raises(ValueError, match="rerun `python benchmarks/table1_fresh.py"):
        F.load_record(bundle)


def test_cross_fitting_fine_tunes_a_pretrained_classifier_on_each_half():
    """As in the benchmark: a classifier pretrained elsewhere (here on other planted
    latents) is fine-tuned on one half of the patients and scores the other."""
    from sklearn.metrics import roc_auc_score

    from xr2ct_lib.train.classifier import fit_latent_classifier

    def planted(n, seed):
        rng = np.random.default_rng(seed)
        y = np.arange(n) % 2
        z = rng.normal(0, 0.3, (n, 2, *SMOKE.latent_shape)).astype(np.float32)
        z[y == 1, :, :, 2:6, 2:6, 2:6] += 1.0
        return z, y

    z0, y0 = planted(40, 1)
    split = {"train": np.arange(32), "val": np.arange(32, 40)}
    init = fit_latent_classifier(SMOKE, z0, y0, split, 4, 0, "pretraining")
    z, y = planted(24, 0)
    s = F.cross_fitted(SMOKE, init, z, y, epochs=2)
    assert s.shape == (24,) and np.isfinite(s).all()
    assert roc_auc_score(y, s) > 0.8
