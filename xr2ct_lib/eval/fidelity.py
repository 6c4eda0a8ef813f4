"""How close generated volumes are to their ground truth, per patient (chapter 5).

- :func:`neighbour_gap`: mean |even slice − odd slice|, the jump between the two halves. In a
  real CT neighbouring slices are nearly equal; halves sampled independently by a weakly
  trained model differ, which shows as horizontal stripes in coronal and sagittal views.
- :func:`fidelity_table`: PSNR, 3D SSIM (:mod:`xr2ct_lib.eval.metrics`) and the neighbour
  gap of generated vs ground truth, one row per patient.
- :func:`sampler_sweep`: the same, averaged, for several samplers and step counts on a few
  patients, with the time per volume: how a profile's fast sampler is chosen.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def neighbour_gap(volume: np.ndarray) -> float:
    """Mean absolute difference between each even slice and the odd slice after it."""
    v = np.asarray(volume, dtype=np.float64)
    n = v.shape[0] - v.shape[0] % 2
    return float(np.abs(v[0:n:2] - v[1:n:2]).mean())


def fidelity_table(generated: dict, truth: dict, ids: list[str]) -> pd.DataFrame:
    """Per patient: PSNR (dB), SSIM, neighbour gap of the generated and the true volume.

    ``generated`` and ``truth`` map patient id → (D, H, W) volume in [−1, 1].
    """
    from xr2ct_lib.eval import metrics as M

    gen = np.stack([generated[p] for p in ids])[:, None]
    gt = np.stack([truth[p] for p in ids])[:, None]
    return pd.DataFrame(
        {
            "PSNR (dB)": M.psnr(gen, gt),
            "SSIM": M.ssim(gen, gt),
            "gap generated": [neighbour_gap(generated[p]) for p in ids],
            "gap ground truth": [neighbour_gap(truth[p]) for p in ids],
        },
        index=pd.Index(ids, name="patient_id"),
    )


def summary(table: pd.DataFrame) -> dict[str, float]:
    """Means of :func:`fidelity_table` and the gap ratio generated / ground truth."""
    m = table.mean(numeric_only=True)
    return {
        "psnr": float(m["PSNR (dB)"]),
        "ssim": float(m["SSIM"]),
        "gap_generated": float(m["gap generated"]),
        "gap_truth": float(m["gap ground truth"]),
        "gap_ratio": float(m["gap generated"] / m["gap ground truth"]),
    }


def sampler_sweep(cfg, pipe, ids: list[str], settings) -> pd.DataFrame:
    """Quality and time of each (sampler, steps) in ``settings`` on the patients ``ids``.

    Volumes are generated afresh with each patient's book seed, as chapter 6 does, into the
    same folders (:func:`~xr2ct_lib.eval.samplers.sampler_dir`).
    """
    from xr2ct_lib.data.cohort import PreparedCohort
    from xr2ct_lib.eval.generated import load_generated
    from xr2ct_lib.eval.samplers import sampler_dir
    from xr2ct_lib.generation.cache import generate_patients

    cohort = PreparedCohort(cfg.run_dir)
    truth = {p: cohort.load(p)["ct"] for p in ids}
    rows = []
    for sampler, steps in settings:
        out = sampler_dir(sampler, steps)
        timing = generate_patients(cfg, pipe, ids, sampler, steps, out_dir=out, reuse=False)
        vols = {p: v["ct"] for p, v in load_generated(cfg, out).items()}
        s = summary(fidelity_table(vols, truth, ids))
        rows.append({"sampler": sampler, "steps": steps, **s,
                     "seconds_per_volume": float(timing["seconds"].mean())})  # fmt: skip
    return pd.DataFrame(rows)


def paired_gains(conditional: pd.DataFrame, unconditional: pd.DataFrame, n_boot: int = 2000,
                 seed: int = 0, level: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """Conditional against unconditional generation of the same patients with the same noise
    seeds (two :func:`fidelity_table` results): per metric (PSNR, SSIM) the two means, the
    mean per-patient gain and its paired bootstrap interval (patients resampled together)."""
    ids = conditional.index.intersection(unconditional.index)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), (n_boot, len(ids)))
    rows = []
    for m, col in (("PSNR (dB)", "PSNR (dB)"), ("SSIM", "SSIM")):
        c, u = (t.loc[ids, col].to_numpy(float) for t in (conditional, unconditional))
        gain = c - u
        boot = gain[draws].mean(1)
        lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
        rows.append({"metric": m, "conditional": c.mean(), "unconditional": u.mean(),
                     "gain": gain.mean(), f"{level:.0%} CI low": lo, f"{level:.0%} CI high": hi,
                     "patients": len(ids)})  # fmt: skip
    return pd.DataFrame(rows).set_index("metric")


def gains_reading(t: pd.DataFrame) -> str:
    """One Markdown sentence from :func:`paired_gains`: whether each gain's interval lies
    above zero."""
    lo, hi = t.columns[3], t.columns[4]
    parts = []
    for m, r in t.iterrows():
        where = ("above zero: the X-ray helps" if r[lo] > 0 else "below zero: the X-ray hurts"
                 if r[hi] < 0 else "includes zero: these patients cannot tell")  # fmt: skip
        parts.append(f"{m} gain {r['gain']:+.3f} ({r[lo]:+.3f} to {r[hi]:+.3f}, {where})")
    return (
        f"Conditional against unconditional generation, the same {int(t['patients'].iloc[0])} "
        f"patients and noise seeds: " + "; ".join(parts) + "."
    )
