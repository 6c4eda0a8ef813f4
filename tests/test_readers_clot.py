"""The pretrained clot reader: simulated from seeds the cohort cannot use, written with its
provenance, refused where it would leak or does not fit."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from xr2ct_lib.cli import main
from xr2ct_lib.config import PROFILES
from xr2ct_lib.train import pretrained as pt
from xr2ct_lib.train.clot import score_volumes
from xr2ct_lib.train.pretrained import save_reader
from xr2ct_lib.train.readers.clot import READER as cr

SMOKE = PROFILES["smoke"]


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    out = tmp_path_factory.mktemp("reader")
    model, provenance = cr.pretrain(SMOKE, patients=4, epochs=1, seed=3)
    save_reader(model, out, provenance)
    return out, model, provenance


def test_pretraining_seeds_lie_outside_the_cohort_range_and_are_recorded(reader):
    out, model, pre = reader
    lo, hi = pre["seeds"]
    assert lo >= 2**31 and hi - lo == 3  # the cohort draws its seeds below 2**31 - 1
    assert pre["patients"] == 4 and 1 <= pre["pe_patients"] <= 3 and pre["profile"] == "smoke"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pretraining"]["seeds"] == [lo, hi] and cfg["kind"] == "clot_segmenter"
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.pt*"))


def test_the_saved_reader_scores_like_the_trained_one(reader):
    out, model, _ = reader
    loaded = cr.load(out, SMOKE, cohort_seeds=[1, 2, 3])
    ct = np.random.default_rng(0).uniform(-1, 1, (2, *SMOKE.reader_size)).astype(np.float32)
    np.testing.assert_allclose(score_volumes(loaded, ct), score_volumes(model, ct))


def test_the_reader_reads_ct_at_the_profiles_reader_size_and_resizes_coarser_ct(reader):
    from xr2ct_lib.data.preprocess import resize_volume
    from xr2ct_lib.train.clot import at_reader_size, clot_probability, fit_clot_segmenter

    out, model, pre = reader
    assert SMOKE.reader_size != SMOKE.ct_size  # the smoke profile reads finer than it generates
    assert model.size == SMOKE.reader_size and tuple(pre["ct_size"]) == SMOKE.reader_size
    coarse = np.random.default_rng(1).uniform(-1, 1, (2, *SMOKE.ct_size)).astype(np.float32)
    fine = at_reader_size(model, coarse)
    assert fine.shape == (2, *SMOKE.reader_size)
    np.testing.assert_array_equal(fine[1], resize_volume(coarse[1], SMOKE.reader_size))
    prob = clot_probability(model, coarse)
    assert prob.shape == (2, *SMOKE.reader_size)
    np.testing.assert_array_equal(prob, clot_probability(model, fine))
    assert at_reader_size(model, fine) is fine  # read as it is, not copied
    masks = np.zeros(coarse.shape, np.uint8)  # fine-tuning needs volumes and masks of its size
    with pytest.raises(ValueError, match=r"train it on CTs and clot masks of its size"):
        fit_clot_segmenter(SMOKE, coarse, masks, [0, 1], 1, 0, init=model)


def test_a_reader_is_refused_for_a_leaking_cohort_or_another_profile(reader):
    out, _, pre = reader
    with pytest.raises(ValueError, match="include cohort patients' seeds"):
        cr.load(out, SMOKE, cohort_seeds=[5, pre["seeds"][0] + 1])
    with pytest.raises(ValueError, match="pretrained for profile smoke"):
        cr.load(out, PROFILES["workshop"])
    other = dataclasses.replace(SMOKE, reader_ct_size=None)  # reads the generator's size
    with pytest.raises(ValueError, match=r"reads CTs of \(48, 40, 48\)"):
        cr.load(out, other)


def test_the_shipped_readers_fit_their_profiles_and_the_embedded_cohort():
    import pandas as pd

    from xr2ct_lib.config import DEFAULT_MANIFEST

    seeds = pd.read_csv(DEFAULT_MANIFEST)["phantom_seed"]
    for name in ("smoke", "workshop"):
        reader = cr.shipped(PROFILES[name], seeds)
        assert reader is not None, f"no {cr.directory(name)}: `make clot-reader PROFILE={name}`"
        assert f"pretrained on {reader.pretraining['patients']} " in cr.describe(reader)
        assert f"(weights/{name}-clot-reader)" in cr.describe(reader)
    assert cr.shipped(PROFILES["paper"]) is None


def test_cli_refuses_bad_sizes_before_simulating(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["pretrain-clot-reader", "--profile", "smoke", "--patients", "1",
                 "--out", str(out)]) == 1  # fmt: skip
    assert "give ≥ 2 patients" in capsys.readouterr().err and not out.exists()


def test_the_fresh_patient_record_belongs_to_the_weights_beside_it(reader, tmp_path):
    import shutil

    out, model, provenance = reader
    d = tmp_path / "reader"
    shutil.copytree(out, d)
    assert pt.load_heldout(d) is None  # no benchmark recorded yet
    result = {
        "patients": 40,
        "auc": 0.8912,
        "by_burden": {
            "central": {"patients": 9, "auc": 1.0},
            "lobar": {"patients": 8, "auc": 0.9013},
        },
    }
    pt.save_heldout(d, result)
    rec = pt.load_heldout(d)
    assert {k: rec[k] for k in result} == result
    line = cr.heldout_line(rec)
    assert "40 fresh simulated patients" in line and "AUC 0.89" in line
    assert "lobar 0.90 (8 patients)" in line
    weights = bytearray((d / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF  # one bit pattern of the last weight changes
    (d / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ValueError, match="recorded for other weights"):
        pt.load_heldout(d)  # the weights changed since the benchmark ran
    pt.save_heldout(d, result)
    save_reader(model, d, provenance)
    assert pt.load_heldout(d) is None  # new weights drop the old record
