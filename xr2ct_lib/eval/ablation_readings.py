"""Chapter 10's readings: what the ablation table, the halves and the whole chapter show,
written from the run's own numbers (:mod:`xr2ct_lib.eval.ablations` makes the tables)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xr2ct_lib.eval.ablations import GEN, LOWER_IS_BETTER, UNCOND, VariantTable, gap_ratio


def separating(sep: pd.DataFrame) -> list[str]:
    """The columns of :func:`~xr2ct_lib.eval.ablations.separation` that separate."""
    return [m for m in sep.columns if sep.iloc[0][m] == "separates"]


def separation_reading(t: VariantTable, sep: pd.DataFrame, variants: list[str]) -> str:
    """Which columns separate the unconditional model from the generator, where it scores
    better against expectation, and whether the best variant stands out of the others."""
    ok, vals = separating(sep), t.values
    best = {m: (vals.loc[variants, m].idxmin() if LOWER_IS_BETTER[m]
                else vals.loc[variants, m].idxmax()) for m in vals.columns}  # fmt: skip
    better = [m for m in vals.columns if np.isfinite(vals.loc[UNCOND, m]) and (
        vals.loc[UNCOND, m] < vals.loc[GEN, m] if LOWER_IS_BETTER[m]
        else vals.loc[UNCOND, m] > vals.loc[GEN, m])]  # fmt: skip
    within = [m for m in ok if all(
        t.lo.loc[v, m] <= vals.loc[best[m], m] <= t.hi.loc[v, m] for v in variants)]  # fmt: skip
    return (
        f"Columns that separate the unconditional model from the generator here: "
        f"{', '.join(ok) or 'none'}. "
        + (f"Against our expectation the unconditional model scores better than the generator "
           f"on {', '.join(better)}. " if better else "")
        + "Among the variants, the best value of "
        + "; ".join(f"{m} is {best[m]}'s" for m in ok)
        + (f". For {', '.join(within)} that best value lies inside every variant's interval: "
           "with these steps and patients the variants are not told apart." if within else ".")
    )  # fmt: skip


def halves_reading(sets: dict[str, dict], real: np.ndarray) -> str:
    """Joint against independent halves trained alike (empty without the pair)."""
    pair = {r["halves"]: r for r in sets.values() if "halves" in r}
    if len(pair) < 2:
        return ""
    gap = {h: gap_ratio(r["ct"], real) for h, r in pair.items()}
    return (
        "Trained alike, the jointly diffused halves have a neighbour-slice gap "
        f"{gap['joint']:.2f}× the ground truth's and the independent halves "
        f"{gap['independent']:.2f}×: "
        + ("here the independent halves do not jump more than the joint ones."
           if gap["independent"] <= gap["joint"] else
           "the independent halves jump more from slice to slice, beyond the real CT's jumps: "
           "stripes." if gap["independent"] > 1 else
           "the independent halves jump more from slice to slice than the joint ones, but "
           "both stay below the ground truth's gap: smoother than the CT, not striped.")
    )  # fmt: skip


def summary(t: VariantTable, sep: pd.DataFrame, n_variants: int, steps, branch: str,
            patients: int) -> str:  # fmt: skip
    """The chapter's summary: the runs, SSIM of the full objective, L1 only and the
    unconditional model, and the columns that see it as worse."""
    vals, full, l1, m = t.values, "Full", "L1", "SSIM"
    return (
        f"- {n_variants} variants trained {sum(steps)} steps each from the "
        f"{branch}, and generated {patients} test patients.\n"
        f"- SSIM: Full {vals.loc[full, m]:.3f} [{t.lo.loc[full, m]:.3f}, {t.hi.loc[full, m]:.3f}],"
        f" L1 only {vals.loc[l1, m]:.3f} [{t.lo.loc[l1, m]:.3f}, {t.hi.loc[l1, m]:.3f}], the "
        f"unconditional model {vals.loc[UNCOND, m]:.3f}.\n"
        f"- Columns that see the unconditional model as worse: "
        f"{', '.join(separating(sep)) or 'none'}.\n"
        "- These are short fine-tunings of one simulated cohort's model; the paper's rows come "
        "from full training runs on its private cohort and only the book's rows compare with "
        "each other."
    )
