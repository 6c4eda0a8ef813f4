"""The cohort's tables (chapter 1): findings and measurements by label, patients per fold,
clot voxels per burden class, and the reading of the X-ray's iodine."""

from __future__ import annotations

import pandas as pd

from xr2ct_lib.data.phantom.model import BURDEN_CLASSES, CONFOUNDERS, SIGNS
from xr2ct_lib.utils import Skipped

NOT_SIMULATED = Skipped("this cohort has no simulated patients (no records of their findings)")


LABELS = {0: "no PE", 1: "PE"}
MEASURES = {
    "rv_lv_ratio": "RV/LV diameter ratio",
    "pa_diameter_mm": "PA diameter (mm)",
    "effusion_ml": "pleural fluid (mL)",
    "clot_volume_ml": "clot volume (mL)",
}


def findings_by_label(records: pd.DataFrame) -> pd.DataFrame | Skipped:
    """% of patients with each burden class, sign and confounder, by PE label."""
    if records.empty:
        return NOT_SIMULATED
    rows = {}
    for c in BURDEN_CLASSES:
        rows[f"burden: {c}"] = records["burden"].eq(c)
    for k in (*SIGNS, "reflux", *CONFOUNDERS):
        kind = "confounder" if k in CONFOUNDERS else "sign"
        rows[f"{kind}: {k.replace('_', ' ')}"] = records[k].astype(bool)
    table = pd.DataFrame(rows).groupby(records["pe_label"].to_numpy()).mean().T * 100
    table.columns = [f"{LABELS[c]} (n={int((records['pe_label'] == c).sum())})" for c in table]
    return table.round(1)


def measurements_by_label(records: pd.DataFrame) -> pd.DataFrame | Skipped:
    """Median (range) of each measurement, by PE label (pleural fluid: of the patients with
    fluid; clot volume: of PE patients)."""
    if records.empty:
        return NOT_SIMULATED
    out = {}
    for key, name in MEASURES.items():
        row = {}
        for label, grp in records.groupby("pe_label"):
            v = grp[key]
            if key == "effusion_ml":
                v = v[v > 0]
            if key == "clot_volume_ml" and label == 0:
                continue
            row[LABELS[label]] = (
                f"{v.median():.2f} ({v.min():.2f}–{v.max():.2f}), n={len(v)}" if len(v) else "–"
            )
        out[name] = row
    return pd.DataFrame(out).T.fillna("–")


def fold_table(index: pd.DataFrame) -> pd.DataFrame:
    """Patients and PE share per fold of a prepared cohort's index."""
    per_fold = index.groupby("fold")["pe_label"].agg(patients="size", PE="sum")
    per_fold["PE %"] = (100 * per_fold["PE"] / per_fold["patients"]).round(1)
    return per_fold


def clot_voxels_table(cohort, records: pd.DataFrame) -> pd.DataFrame | Skipped:
    """Clot voxels per PE patient of the prepared cohort, by burden class: patients, median,
    min, max."""
    if records.empty:
        return NOT_SIMULATED
    counts = {p: int(cohort.load(p)["clot"].sum()) for p in cohort.ids
              if records.loc[p, "pe_label"] == 1}  # fmt: skip
    by_class = records.loc[list(counts)].assign(voxels=list(counts.values()))
    table = by_class.groupby("burden")["voxels"].describe()[["count", "50%", "min", "max"]]
    table.columns = ["patients", "median voxels", "min", "max"]
    return table.astype(int)


def iodine_reading(att: dict | None) -> str:
    """One Markdown paragraph: how much of the CTPA's projected attenuation is iodine
    (:func:`xr2ct_lib.viz.cohort.xray_without_iodine`'s numbers; None: empty)."""
    if att is None:
        return ""
    return (
        f"Through the rays that cross the most blood, the CTPA projects "
        f"{att['CTPA']:.0f} mm of water-equivalent attenuation, the body without iodine "
        f"{att['without iodine']:.0f} mm: the iodine adds {att['iodine']:.1f} mm "
        f"({100 * att['iodine'] / att['CTPA']:.1f} %). The clean DRR contains it; "
        f"the X-ray does not."
    )
