"""Conditional against unconditional generation of the same patients: paired gains."""

import numpy as np
import pandas as pd

from xr2ct_lib.eval.fidelity import gains_reading, paired_gains


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
