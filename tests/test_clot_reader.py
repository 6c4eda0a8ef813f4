"""The pretrained clot reader: simulated from seeds the cohort cannot use, written with its
provenance, refused where it would leak or does not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xr2ct_lib.cli import main
from xr2ct_lib.config import PROFILES
from xr2ct_lib.train import clot_reader as cr
from xr2ct_lib.train.clot import score_volumes

SMOKE = PROFILES["smoke"]


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    out = tmp_path_factory.mktemp("reader")
    model, provenance = cr.pretrain_clot_reader(SMOKE, patients=4, epochs=1, seed=3)
    cr.save_clot_reader(model, out, provenance)
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
    loaded = cr.load_clot_reader(out, SMOKE, cohort_seeds=[1, 2, 3])
    ct = np.random.default_rng(0).uniform(-1, 1, (2, *SMOKE.ct_size)).astype(np.float32)
    np.testing.assert_allclose(score_volumes(loaded, ct), score_volumes(model, ct))


def test_a_reader_is_refused_for_a_leaking_cohort_or_another_profile(reader):
    out, _, pre = reader
    with pytest.raises(ValueError, match="include cohort patients' seeds"):
        cr.load_clot_reader(out, SMOKE, cohort_seeds=[5, pre["seeds"][0] + 1])
    with pytest.raises(ValueError, match="pretrained for profile smoke"):
        cr.load_clot_reader(out, PROFILES["workshop"])


def test_the_shipped_readers_fit_their_profiles_and_the_embedded_cohort():
    import pandas as pd

    from xr2ct_lib.config import DEFAULT_MANIFEST

    seeds = pd.read_csv(DEFAULT_MANIFEST)["phantom_seed"]
    for name in ("smoke", "workshop"):
        reader = cr.shipped_clot_reader(PROFILES[name], seeds)
        assert reader is not None, f"no {cr.reader_dir(name)}: `make clot-reader PROFILE={name}`"
        assert f"pretrained on {reader.pretraining['patients']} " in cr.describe(reader)
        assert f"(weights/{name}-clot-reader)" in cr.describe(reader)
    assert cr.shipped_clot_reader(PROFILES["paper"]) is None


def test_cli_refuses_bad_sizes_before_simulating(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["pretrain-clot-reader", "--profile", "smoke", "--patients", "1",
                 "--out", str(out)]) == 1  # fmt: skip
    assert "give ≥ 2 patients" in capsys.readouterr().err and not out.exists()
