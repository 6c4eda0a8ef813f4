"""The pretrained X-ray reader: pretraining, its record, refusals, and what it reads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from xr2ct_lib.cli import main
from xr2ct_lib.config import PROFILES
from xr2ct_lib.train.pretrained import (
    FIRST_SEED,
    load_heldout,
    pretraining_labels,
    pretraining_seeds,
    save_reader,
)
from xr2ct_lib.train.readers import cxr as xr

SMOKE = PROFILES["smoke"]


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    out = tmp_path_factory.mktemp("cxr") / "reader"
    model, provenance = xr.READER.pretrain(SMOKE, patients=6, epochs=1, seed=3)
    save_reader(model, out, provenance)
    return out, model, provenance


def test_pretraining_writes_the_reader_with_its_patients(reader):
    out, model, pre = reader
    first = FIRST_SEED + (xr.SLOT + 3) * 10**6
    assert pre["seeds"] == [first, first + 5] and pre["input_size"] == [3, 64, 64]
    loaded = xr.READER.load(out, SMOKE, cohort_seeds=[1, 2, 3])
    assert loaded.findings == tuple(xr.FINDINGS)
    x = torch.rand(4, 3, 64, 64)
    torch.testing.assert_close(loaded.all_logits(x), model.eval().all_logits(x))
    assert loaded(x).shape == (4, 1)  # forward: the PE output alone
    labels = pretraining_labels(3, 6)
    _, records = xr.simulate_xrays(SMOKE, pretraining_seeds(3, 6, xr.SLOT), labels)
    y = xr.targets(records)
    assert pre["pe_patients"] == int(y[:, 0].sum()) == int(labels.sum())
    assert pre["findings"] == {f: int(y[:, i + 1].sum()) for i, f in enumerate(xr.FINDINGS)}


def test_simulated_xrays_do_not_depend_on_the_number_of_workers(monkeypatch):
    monkeypatch.setattr(xr, "CHUNK", 2)
    seeds = pretraining_seeds(0, 4, 997)
    a, ra = xr.simulate_xrays(SMOKE, seeds, [1, 0, 0, 1], workers=1)
    b, rb = xr.simulate_xrays(SMOKE, seeds, [1, 0, 0, 1], workers=2)
    assert a.shape == (4, 3, 64, 64) and a.dtype == np.float16
    np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(ra, rb)
    assert ra["phantom_seed"].tolist() == seeds.tolist()


def _patches(n: int, seed: int):
    """X-rays (n, 3, 32, 32) of noise; PE and each effusion side add a bright patch of its own."""
    rng = np.random.default_rng(seed)
    rec = pd.DataFrame({"pe_label": rng.random(n) < 0.5,
                        "effusion_left_ml": (rng.random(n) < 0.4) * 200.0,
                        "effusion_right_ml": (rng.random(n) < 0.4) * 200.0})  # fmt: skip
    x = rng.random((n, 3, 32, 32)).astype(np.float32) * 0.5
    x[rec["pe_label"].to_numpy(), :, 2:10, 12:20] += 0.5
    x[rec["effusion_left_ml"].to_numpy() > 0, :, 22:30, 20:30] += 0.5
    x[rec["effusion_right_ml"].to_numpy() > 0, :, 22:30, 2:12] += 0.5
    return torch.from_numpy(x), rec.astype({"pe_label": int})


def test_each_output_learns_its_own_target_and_nothing_without_one():
    findings = ("effusion_left", "effusion_right")
    x, rec = _patches(160, 0)
    x_new, rec_new = _patches(80, 1)
    y = xr.targets(rec, findings)
    model = xr.fit_cxr_reader(x, y, findings, epochs=12, seed=0, width=8)
    aucs = xr.output_aucs(xr.output_probabilities(model, x_new), rec_new)["AUC"]
    assert list(aucs.index) == ["pe", *findings]
    assert (aucs > 0.95).all(), aucs
    shuffled = y[np.random.default_rng(2).permutation(len(y))]
    blind_model = xr.fit_cxr_reader(x, shuffled, findings, epochs=12, width=8)
    blind = xr.output_aucs(xr.output_probabilities(blind_model, x_new), rec_new)["AUC"]
    assert (blind < 0.8).all(), blind
    with pytest.raises(ValueError, match="targets of shape"):
        xr.fit_cxr_reader(x, y[:, :2], findings, epochs=1)


def test_a_reader_is_refused_for_a_leaking_cohort_or_another_profile(reader):
    out, _, pre = reader
    with pytest.raises(ValueError, match="include cohort patients' seeds"):
        xr.READER.load(out, SMOKE, cohort_seeds=[5, pre["seeds"][0] + 1])
    with pytest.raises(ValueError, match="pretrained for profile smoke"):
        xr.READER.load(out, PROFILES["workshop"])
    with pytest.raises(ValueError, match=r"reads X-rays of \(3, 64, 64\)"):
        xr.READER.load(out, dataclasses.replace(SMOKE, cxr_size=32))


def test_the_outputs_table_and_its_reading(reader):
    _, model, _ = reader
    x, rec = _patches(160, 3)
    findings = ("effusion_left", "effusion_right")
    trained = xr.fit_cxr_reader(x, xr.targets(rec, findings), findings, epochs=12, width=8)
    fresh = {"patients": 50, "outputs": {k: {"patients": 7, "auc": 0.5} for k in
                                          ("pe", *findings)}}  # fmt: skip
    t = xr.outputs_table(trained, x, rec, fresh)
    assert list(t.columns) == [
        "cohort (160 patients): patients with it", "cohort (160 patients): AUC",
        "fresh (50 patients): patients with it", "fresh (50 patients): AUC",
    ]  # fmt: skip
    n = (rec.effusion_left_ml > 0).sum()
    assert t.loc["effusion_left", "cohort (160 patients): patients with it"] == n
    text = xr.outputs_reading(t)
    assert "reads effusion left (1.00)" in text and "barely reads none" in text
    assert xr.output_label("lv_cardiomegaly") == "LV cardiomegaly"
    rec_none = rec.assign(effusion_right_ml=0.0)  # one class only: no AUC
    one_class = xr.output_aucs(xr.output_probabilities(trained, x), rec_none)
    assert np.isnan(one_class.loc["effusion_right", "AUC"])


def test_cli_refuses_bad_sizes_before_simulating(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["pretrain-cxr-reader", "--profile", "smoke", "--epochs", "0",
                 "--out", str(out)]) == 1  # fmt: skip
    assert "give ≥ 2 patients and ≥ 1 epoch" in capsys.readouterr().err and not out.exists()


def test_the_shipped_readers_fit_their_profiles_and_the_embedded_cohort():
    from xr2ct_lib.config import DEFAULT_MANIFEST

    seeds = pd.read_csv(DEFAULT_MANIFEST)["phantom_seed"]
    for name in ("smoke", "workshop"):
        reader = xr.READER.shipped(PROFILES[name], seeds)
        assert reader is not None, (
            f"no {xr.READER.directory(name)}: `make cxr-reader PROFILE={name}`"
        )
        assert f"pretrained on {reader.pretraining['patients']} " in xr.READER.describe(reader)
        assert f"(weights/{name}-cxr-reader)" in xr.READER.describe(reader)
        fresh = load_heldout(xr.READER.directory(name))  # raises if recorded for other weights
        assert fresh is not None and set(fresh["outputs"]) == {"pe", *reader.findings}
    assert xr.READER.shipped(PROFILES["paper"]) is None
    assert xr.READER.describe(None) == "X-ray CNN trained here per fold from scratch"


def test_the_shipped_workshop_reader_sees_findings_on_fresh_xrays():
    """40 fresh workshop X-rays (seeds of no cohort, pretraining or benchmark). The reader
    finds the effusions and the enlarged pulmonary artery (here 0.95–1.00; 0.97–1.00 on 540
    fresh patients in its benchmark); a network whose weights were wrong would sit near 0.5."""
    profile = PROFILES["workshop"]
    seeds = pretraining_seeds(0, 40, 996)
    labels = (np.arange(40) % 2).tolist()
    reader = xr.READER.shipped(profile, seeds)
    x, rec = xr.simulate_xrays(profile, seeds, labels, workers=2)
    aucs = xr.output_aucs(xr.output_probabilities(reader, x), rec)
    print(aucs.round(3).to_string())
    for f in ("effusion_left", "effusion_right", "pa_enlargement"):  # 5, 7 and 6 patients
        assert aucs.loc[f, "patients with it"] >= 3 and aucs.loc[f, "AUC"] >= 0.85, aucs


def test_the_output_bars_show_each_auc_from_chance():
    import matplotlib

    matplotlib.use("Agg")
    from xr2ct_lib.viz.curves import output_auc_bars

    t = pd.DataFrame({"cohort: patients with it": [3, 4], "cohort: AUC": [0.6, 0.9],
                      "50 fresh: AUC": [0.7, np.nan]}, index=["pe", "rv_strain"])  # fmt: skip
    ax = output_auc_bars(t, "outputs").axes[0]
    assert sorted(round(p.get_width(), 2) for p in ax.patches) == [0.0, 0.1, 0.2, 0.4]
    assert {p.get_x() for p in ax.patches} == {0.5}
    ticks = {x.get_text(): x.get_position()[1] for x in ax.get_yticklabels()}
    assert ticks["PE"] > ticks["RV strain"]  # the table's order, top down
    assert [x.get_text() for x in ax.get_legend().get_texts()] == ["cohort", "50 fresh"]
