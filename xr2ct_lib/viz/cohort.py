"""Figures of the cohort (chapter 1): the HU histogram and the paper's window, the CT
preprocessing step by step, X-rays beside DRRs, measurements by label, a gallery of signs on
CT and X-ray, the X-ray without iodine, clots by burden class. Its tables are
:mod:`xr2ct_lib.eval.cohort`'s."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from xr2ct_lib.data.hu_window import PAPER_WINDOW, HUWindow
from xr2ct_lib.data.phantom.labels import CODE
from xr2ct_lib.data.phantom.model import BURDEN_CLASSES
from xr2ct_lib.eval.cohort import LABELS, MEASURES, NOT_SIMULATED
from xr2ct_lib.viz.volumes import mask_outline, plane_slice, show_planes


def hu_histogram(ct, patient_id: str, window: HUWindow = PAPER_WINDOW):
    """The HU histogram of a CT (:class:`~xr2ct_lib.data.io.CTVolume`), the paper's window
    shaded and the tissues marked."""
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.hist(ct.array.ravel(), bins=200, range=(-1100, 1500), color="0.4", log=True)
    ax.axvspan(window.lo, window.hi, color="tab:orange", alpha=0.25,
               label=f"window {window.lo:.0f}…{window.hi:.0f} HU")  # fmt: skip
    for hu, name in [(-1000, "air"), (-800, "lung"), (40, "soft tissue / clot"), (300, "contrast")]:
        ax.axvline(hu, color="0.2", lw=0.6, ls="--")
        ax.text(hu, ax.get_ylim()[1] * 0.5, name, rotation=90, fontsize=7, ha="right")
    ax.set_xlabel("HU")
    ax.set_ylabel("voxels (log)")
    ax.set_title(f"HU histogram of {patient_id} and the paper's window")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def preprocessing_steps(ct, labels, profile, patient_id: str):
    """The CT preprocessing of :func:`~xr2ct_lib.data.preprocess.preprocess_ct_steps`, one
    row of three planes per step."""
    from xr2ct_lib.data.preprocess import preprocess_ct_steps

    steps = preprocess_ct_steps(ct, size=profile.ct_size, spacing_mm=profile.ct_spacing_mm,
                                labels=labels)  # fmt: skip
    fig, axes = plt.subplots(len(steps), 3, figsize=(7.5, 2.4 * len(steps)))
    for (name, (vol, kw)), ax_row in zip(steps.items(), axes, strict=True):
        show_planes(ax_row, vol, **kw)
        ax_row[0].set_title(f"{name}\n{vol.shape}", fontsize=8, loc="left")
    fig.suptitle(f"{patient_id}: the CT preprocessing, step by step", y=1.0)
    fig.tight_layout()
    return fig


def xrays_beside_drrs(cohort, n: int = 3):
    """The first ``n`` PE and ``n`` non-PE patients of the prepared cohort: the simulated
    X-ray above the clean registered DRR."""
    pe = [p for p, y in zip(cohort.ids, cohort.labels, strict=True) if y == 1][:n]
    no = [p for p, y in zip(cohort.ids, cohort.labels, strict=True) if y == 0][:n]
    fig, axes = plt.subplots(2, len(pe + no), figsize=(12, 4.6), squeeze=False)
    for k, p in enumerate(pe + no):
        arrays = cohort.load(p)
        for r, key in enumerate(("cxr", "drr")):
            ax = axes[r, k]
            ax.imshow(arrays[key][0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{p}\n{'PE' if p in pe else 'no PE'}", fontsize=8)
    axes[0, 0].set_ylabel("simulated X-ray")
    axes[1, 0].set_ylabel("clean DRR")
    fig.suptitle("Simulated chest X-rays (top) beside the clean registered DRRs (bottom)")
    fig.tight_layout()
    return fig


def plot_measurements(records: pd.DataFrame):
    """Distributions of the measured RV/LV ratio, PA diameter, pleural fluid and clot volume
    by PE label (seaborn)."""
    import seaborn as sns

    if records.empty:
        return NOT_SIMULATED

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

    if records.empty:
        return NOT_SIMULATED
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
    fig.suptitle("Signs and confounders on the CT (as simulated) and on the X-ray", y=1.02)
    return fig


def xray_without_iodine(cfg, patient):
    """Chapter 1's patient (:class:`~xr2ct_lib.data.cohort.ExamplePatient`) simulated again in
    memory, checked against its stored X-ray, and :func:`plot_xray_without_iodine` of it:
    the figure and the projected attenuation (:func:`~xr2ct_lib.eval.cohort.iodine_reading`);
    skipped for a patient that is not simulated."""
    from xr2ct_lib.data import phantom

    if patient.row.get("source") != "phantom":
        return NOT_SIMULATED, None
    base = phantom.load_base(phantom.simulation_spacing_mm(cfg.profile), cfg.run_dir / "cache")
    demo = phantom.simulate_patient(
        int(patient.row["phantom_seed"]), 1, base, cfg.profile.drr_size,
        min_clot_z_mm=phantom.min_clot_z_mm(base, cfg.profile.ct_size[0]),
    )  # fmt: skip
    stored = phantom.read_png16(patient.path("cxr_path"))
    print(f"{patient.patient_id} again in memory: largest difference to its stored X-ray "
          f"{np.abs(demo.cxr - stored).max():.1e} (16-bit PNG rounding)")  # fmt: skip
    return plot_xray_without_iodine(demo, base)


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
    with the most clot, clot outlined (red)."""
    if records.empty:
        return NOT_SIMULATED
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
    fig.suptitle("Ground-truth clots (red) by burden class, preprocessed CT", y=1.02)
    return fig
