"""``eval/fidelity.py``: paired gains of conditional against unconditional generation of the same
patients, and the sampler sweep on a tiny run (the book's seeds, chapter 6's folders)."""

import numpy as np
import pandas as pd
import pytest

from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.fidelity import gains_reading, paired_gains
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.generation import cache, load


def _tables(shift_psnr: float, shift_ssim: float, n: int = 30):
    rng = np.random.default_rng(0)
    base = pd.DataFrame({"PSNR (dB)": rng.normal(20, 2, n), "SSIM": rng.normal(0.6, 0.05, n)},
                        index=[f"P{i}" for i in range(n)])  # fmt: skip
    noise = pd.DataFrame({"PSNR (dB)": rng.normal(0, 0.3, n), "SSIM": rng.normal(0, 0.01, n)},
                         index=base.index)  # fmt: skip
    cond = base + noise
    cond["PSNR (dB)"] += shift_psnr
    cond["SSIM"] += shift_ssim
    return cond, base


def test_a_paired_gain_is_found_where_patients_vary_more_than_the_gain():
    cond, unc = _tables(0.5, 0.0)
    t = paired_gains(cond, unc)
    lo, hi = t.columns[3], t.columns[4]
    # between-patient spread (SD 2 dB) dwarfs the 0.5 dB gain, pairing finds it
    assert t.loc["PSNR (dB)", lo] > 0 and t.loc["PSNR (dB)", "gain"] > 0.3
    assert t.loc["SSIM", lo] < 0 < t.loc["SSIM", hi]
    text = gains_reading(t)
    assert "PSNR (dB) gain +0." in text and "above zero" in text and "cannot tell" in text
    assert int(t["patients"].iloc[0]) == 30


def test_only_shared_patients_are_paired_and_a_loss_is_read_as_such():
    cond, unc = _tables(-1.0, -0.05)
    t = paired_gains(cond.iloc[:20], unc)
    assert int(t["patients"].iloc[0]) == 20
    assert t.loc["PSNR (dB)", t.columns[4]] < 0
    assert "below zero" in gains_reading(t)


def test_sampler_sweep_generates_as_the_book_does(run):
    """The benchmark's volumes are generate_patients' (the book's seeds), in chapter 6's folders."""
    from xr2ct_lib.eval.fidelity import sampler_sweep
    from xr2ct_lib.eval.samplers import sampler_dir

    pipe, _ = load.live_generator(run)
    ids = ["P00", "P06"]
    table = sampler_sweep(run, pipe, ids, [("ddim", 2), ("dpm++", 2)])
    assert table[["sampler", "steps"]].values.tolist() == [["ddim", 2], ["dpm++", 2]]
    assert (table["seconds_per_volume"] > 0).all()
    swept = load_generated(run, sampler_dir("dpm++", 2))
    assert sampler_dir("dpm++", 2) == "generated_dpmpp_2" and sorted(swept) == ids
    t = cache.generate_patients(run, pipe, ids, "dpm++", 2, out_dir="generated_check", reuse=False)
    assert t["seed"].tolist() == [cache.patient_seed(run, 0), cache.patient_seed(run, 6)]
    again = load_generated(run, "generated_check")
    for pid in ids:
        np.testing.assert_array_equal(swept[pid]["ct"], again[pid]["ct"])
    # its PSNR, computed here without the library: 10 log10(2² / MSE) on [−1, 1] volumes
    cohort = PreparedCohort(run.run_dir)
    clip = {p: (np.clip(swept[p]["ct"], -1, 1), np.clip(cohort.load(p)["ct"], -1, 1)) for p in ids}
    mse = [np.mean((g.astype(np.float64) - t) ** 2) for g, t in clip.values()]
    expected = np.mean([10 * np.log10(4 / m) for m in mse])
    assert table.loc[1, "psnr"] == pytest.approx(expected, rel=1e-4)
