"""Figures and tables of the simulated cohort (chapter 1): findings by label, measurements,
a gallery of signs on CT and X-ray, the X-ray without iodine, clots by burden class."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from xr2ct_lib.data.phantom.labels import CODE
from xr2ct_lib.data.phantom.model import BURDEN_CLASSES, CONFOUNDERS, SIGNS
from xr2ct_lib.viz.volumes import mask_outline, plane_slice

LABELS = {0: "no PE", 1: "PE"}
MEASURES = {
    "rv_lv_ratio": "RV/LV diameter ratio",
    "pa_diameter_mm": "PA diameter (mm)",
    "effusion_ml": "pleural fluid (mL)",
    "clot_volume_ml": "clot volume (mL)",
}


def findings_by_label(records: pd.DataFrame) -> pd.DataFrame:
    """% of patients with each burden class, sign and confounder, by PE label."""
    rows = {}
    for c in BURDEN_CLASSES:
        rows[f"burden: {c}"] = records["burden"].eq(c)
    for k in (*SIGNS, "reflux", *CONFOUNDERS):
        kind = "confounder" if k in CONFOUNDERS else "sign"
        rows[f"{kind}: {k.replace('_', ' ')}"] = records[k].astype(bool)
    table = pd.DataFrame(rows).groupby(records["pe_label"].to_numpy()).mean().T * 100
    table.columns = [f"{LABELS[c]} (n={int((records['pe_label'] == c).sum())})" for c in table]
    return table.round(1)


def measurements_by_label(records: pd.DataFrame) -> pd.DataFrame:
    """Median (range) of each measurement, by PE label (pleural fluid: of the patients with
    fluid; clot volume: of PE patients)."""
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


def plot_measurements(records: pd.DataFrame):
    """Distributions of the measured RV/LV ratio, PA diameter, pleural fluid and clot volume
    by PE label (seaborn)."""
    import seaborn as sns

    df = records.assign(label=records["pe_label"].map(LABELS))
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    for ax, (key, name) in zip(axes, MEASURES.items(), strict=True):
        d = df[df[key] > 0] if key in ("effusion_ml", "clot_volume_ml") else df
        order = [v for v in LABELS.values() if v in set(d["label"])]
        sns.boxplot(data=d, x="label", y=key, order=order, ax=ax, color="0.9", fliersize=0)
        palette = {"no PE": "tab:blue", "PE": "tab:red"}
        sns.stripplot(data=d, x="label", y=key, order=order, ax=ax, hue="label",
                      palette=palette, size=3, legend=False)  # fmt: skip
        ax.set_xlabel("")
        ax.set_ylabel(name)
    axes[0].axhline(1.0, color="0.4", lw=0.6, ls="--")
    axes[2].set_title("patients with fluid", fontsize=8)
    axes[3].set_title("PE patients", fontsize=8)
    fig.tight_layout()
    return fig


def pick_examples(records: pd.DataFrame) -> dict[str, str]:
    """One patient per finding for the gallery (the first in table order), where present."""
    r = records
    quiet = (r["rv_strain"] == 0) & (r["lv_cardiomegaly"] == 0) & (r["pa_enlargement"] == 0)
    wants = {
        "RV strain": r["rv_strain"] == 1,
        "LV cardiomegaly": (r["lv_cardiomegaly"] == 1) & (r["rv_strain"] == 0),
        "normal heart": quiet & (r["pe_label"] == 0),
        "PA enlargement": r["pa_enlargement"] == 1,
        "infarct": (r["infarct"] == 1) & (r["infarct_ml"] >= 5),
        "pneumonia": r["pneumonia"] == 1,
        "effusion": (r["effusion"] == 1) | (r["bilateral_effusion"] == 1),
    }
    return {k: m[m].index[0] for k, m in wants.items() if m.any()}


_GALLERY_CODE = {
    "RV strain": "right_ventricle", "LV cardiomegaly": "left_ventricle",
    "normal heart": "right_ventricle", "PA enlargement": "pulmonary_trunk",
    "infarct": "infarct", "pneumonia": "consolidation", "effusion": "effusion",
}  # fmt: skip


def plot_findings_gallery(run_dir, manifest: pd.DataFrame, records: pd.DataFrame):
    """Per finding, an axial CT slice (−100…900 HU, as written) through it with the findings
    map outlined (RV red, LV blue, the finding yellow), and the patient's X-ray."""
    from xr2ct_lib.data.io import read_ct
    from xr2ct_lib.data.phantom.build import findings_path, read_png16

    picks = pick_examples(records)
    # at most four findings a row (CT above X-ray): seven side by side were 16 inches wide
    # and their titles unreadable at the book's width
    per_row = min(4, len(picks))
    bands = -(-len(picks) // per_row)
    fig, grid = plt.subplots(2 * bands, per_row, figsize=(2.3 * per_row, 5.0 * bands),
                             squeeze=False)  # fmt: skip
    rows = manifest.set_index("patient_id")
    for ax in grid.ravel():
        ax.set_axis_off()
    for k, (name, pid) in enumerate(picks.items()):
        band, col = divmod(k, per_row)
        axes = grid[2 * band : 2 * band + 2, :]
        k = col
        row = {"patient_id": pid, **rows.loc[pid].to_dict()}
        ct = read_ct(Path(run_dir) / row["ct_path"]).array
        f = read_ct(findings_path(run_dir, row), dtype=np.uint8).array
        mask = f == CODE[_GALLERY_CODE[name]]
        z = int(np.argmax(mask.sum(axis=(1, 2))))
        ax = axes[0, k]
        ax.imshow(np.clip(plane_slice(ct, "axial", z), -100, 900), cmap="gray")
        for code, color in (("right_ventricle", "tab:red"), ("left_ventricle", "tab:blue")):
            mask_outline(ax, f[z] == CODE[code], color, 0.6)
        if _GALLERY_CODE[name] not in ("right_ventricle", "left_ventricle"):
            mask_outline(ax, mask[z], "gold", 0.7)
        r = records.loc[pid]
        ax.set_title(f"{name}\n{pid} ({LABELS[int(r['pe_label'])]})\nRV/LV {r['rv_lv_ratio']:.2f}, "
                     f"PA {r['pa_diameter_mm']:.0f} mm", fontsize=9)  # fmt: skip
        axes[1, k].imshow(read_png16(Path(run_dir) / row["cxr_path"]), cmap="gray")
    fig.tight_layout()
    return fig


def plot_xray_without_iodine(patient, base):
    """The clean DRR of the CTPA, the DRR of the same body without iodine (what the X-ray is
    rendered from), their difference (the projected iodine) and the degraded X-ray; returns
    the figure and the mean projected attenuation (mm water) through the blood pool."""
    from xr2ct_lib.data.drr import make_subject, render

    aux = base.aux
    center, fov = tuple(aux["view_center_zyx"]), float(aux["view_fov_mm"])
    size = patient.drr.shape[0]
    sp = patient.spacing_mm
    proj = {k: render(make_subject(v, sp, center_zyx=center), size, fov_mm=fov)
            for k, v in {"ct": patient.ct_hu, "plain": patient.plain_hu}.items()}  # fmt: skip
    iodine = proj["ct"] - proj["plain"]
    pool = iodine > np.percentile(iodine, 95)  # rays through the most blood
    numbers = {
        "CTPA": float(proj["ct"][pool].mean()),
        "without iodine": float(proj["plain"][pool].mean()),
        "iodine": float(iodine[pool].mean()),
    }
    fig, axes = plt.subplots(1, 4, figsize=(11, 3.2))
    lo, hi = np.percentile(proj["ct"], [0.5, 99.5])
    panels = [
        (patient.drr, "clean DRR of the CTPA\n(with iodine; DRR pre-training)", {}),
        (proj["plain"], "DRR of the same body\nwithout iodine", {"vmin": lo, "vmax": hi}),
        (iodine, "difference: the projected\niodine (heart, vessels)", {"cmap": "magma"}),
        (patient.cxr, "the X-ray (rendered without\niodine, unregistered, degraded)", {}),
    ]
    for ax, (img, title, kw) in zip(axes, panels, strict=True):
        ax.imshow(img, **({"cmap": "gray"} | kw))
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig, numbers


def plot_clots_by_class(cohort, records: pd.DataFrame):
    """One PE patient per burden class: the axial and the coronal slice of the preprocessed CT
    with the most clot, clot outlined (red); returns the figure and the patients."""
    picks = {}
    for c in BURDEN_CLASSES:
        ids = [p for p in cohort.ids if p in records.index and records.loc[p, "burden"] == c]
        if ids:  # the patient with the median clot volume of its class
            vols = records.loc[ids, "clot_volume_ml"]
            picks[c] = (vols - vols.median()).abs().idxmin()
    fig, axes = plt.subplots(2, len(picks), figsize=(3.0 * len(picks), 6.0), squeeze=False)
    for k, (c, pid) in enumerate(picks.items()):
        a = cohort.load(pid)
        ct, clot = a["ct"], a["clot"]
        z, y = int(np.argmax(clot.sum(axis=(1, 2)))), int(np.argmax(clot.sum(axis=(0, 2))))
        for r, (plane, idx) in enumerate((("axial", z), ("coronal", y))):
            ax = axes[r, k]
            ax.imshow(plane_slice(ct, plane, idx), cmap="gray", vmin=-1, vmax=1)
            mask_outline(ax, plane_slice(clot, plane, idx))
            ax.set_axis_off()
        axes[0, k].set_title(f"{c}: {pid}\n{int(clot.sum())} clot voxels at "
                             f"{'×'.join(map(str, ct.shape))}", fontsize=8)  # fmt: skip
    fig.tight_layout()
    return fig, picks
