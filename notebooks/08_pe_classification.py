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
# # 8. PE classification: CTPA, X-ray and generated CTPA
#
# ## Overview
#
# The paper's claim rests on classification. A classifier reading real CTPA reaches AUC
# 0.90; one reading the X-ray alone 0.69; reading the CTPA *generated* from that X-ray,
# 0.80 (Table 1). Table 7 compares CTPA classifiers: an INSPECT-style slice CNN + LSTM on
# pixels, with fewer and fewer slices, and a 3D DenseNet on the VAE latents.
#
# **Objectives**
#
# 1. Run the paper's evaluation: six stratified folds at patient level, a Youden
#    threshold {cite}`youden1950` chosen on the validation fold, AUC with its DeLong
#    95 % CI {cite}`delong1988,sun2014fastdelong`, accuracy, specificity, sensitivity,
#    PPV and NPV on the pooled test folds.
# 2. Train the CTPA latent DenseNet, the X-ray classifier and the INSPECT-style models.
# 3. Compare the ROC curves, and CTPA against X-ray with DeLong's test.
# 4. Read generated CTPA with the real-CTPA classifier (when chapter 5 has produced it).
#
# **Prerequisites**: chapters 1–3 (cohort, latents); chapter 5 for the generated rows.
# About 4 minutes in `workshop`.

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0
weights = "shipped"  # which VAE/encoder/generator: weights/<profile>/ or this run's own

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from xr2ct_lib import book
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval import classifier_cv as ccv
from xr2ct_lib.eval import crossval as cv
from xr2ct_lib.eval.generated import generated_rows
from xr2ct_lib.eval.signal import signal_budget
from xr2ct_lib.models.latents import load_latents
from xr2ct_lib.viz.curves import roc_curves
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights)
cohort = PreparedCohort(cfg.run_dir)
ids, labels, folds = cohort.ids, cohort.labels, cohort.folds
_, z = load_latents(cfg, ids, normalized=True)  # in the order of `labels`
cv_dir = cfg.run_dir / "cv"
NETS = "in-book classifiers trained here (no pretrained weights)"
# the profile's cv_folds: smoke runs two folds to keep CI short, the others all six
print(f"{len(ids)} patients, {labels.mean():.0%} PE; test folds {cfg.profile.cv_test_folds}")

# %% [markdown]
# ## CTPA only: the latent DenseNet
#
# A MONAI {cite}`cardoso2022monai` 3D DenseNet reads the normalised VAE latent of a half
# volume; each half is a training sample, and a patient's score is the mean over its two
# halves. This is also the classifier whose loss steers the diffusion model (chapter 4).
# Each fold's model is saved: generated CTPA of a test patient is later read by the model
# of that patient's test fold, which never saw the patient.

# %%
res = {}
res["CTPA only (latent DenseNet)"] = ccv.cv_latent_classifier(cfg, z, labels, folds, ids)

# %% [markdown]
# ## X-ray only
#
# The paper's baseline is a RadImageNet ResNet-50 fine-tuned on the X-rays
# (`xr2ct_lib.models.classifiers.load_radimagenet_resnet50` loads those weights when
# present). Offline, a small CNN is trained from scratch per fold on the same X-rays the
# generator sees.

# %%
res["CXR only (CNN)"] = ccv.cv_cxr_classifier(cfg, cohort.stack("cxr"), labels, folds, ids)

# %% [markdown]
# ## Table 7: INSPECT-style classifiers on original CTPA
#
# INSPECT {cite}`huang2023inspect` trains a 2D slice encoder with slice labels (RSPECT
# {cite}`colak2021rspect` provides them), freezes it, and reads the sequence of slice
# features with an LSTM. The simulated cohort knows its clots, so a slice is positive
# when it contains clot. The paper uses all slices, 128 and 64; the book scales those to
# its volumes: all, half and a quarter of the slices.

# %%
d = cfg.profile.ct_size[0]
n_slices = {f"all ({d})": None, f"{d // 2} slices": d // 2, f"{d // 4} slices": d // 4}
inspect_res = ccv.cv_slice_lstm(cfg, cohort.stack("ct"), cohort.stack("clot"), labels, folds, ids,
                                n_slices)  # fmt: skip
table7 = {f"INSPECT-style, {k}": v for k, v in inspect_res.items()}
table7["Latent DenseNet (VAE latents)"] = res["CTPA only (latent DenseNet)"]
display(save_table(cv.results_table(table7), cfg, "table7_ctpa_classifiers",
                   "Table 7 counterpart: CTPA classifiers on original CTPA (pooled test folds)",
                   networks=NETS))  # fmt: skip

# %% [markdown]
# ## Table 1: CTPA, X-ray, and generated CTPA
#
# ### Generated CTPA
#
# The generated rows come from chapter 5's volumes, read by the real-CTPA latent
# classifier of each patient's test fold. `generated_rows` returns them when generated
# volumes exist, and says so when they do not.

# %%
gen = generated_rows(cfg, dict(zip(ids, labels, strict=True)), res["CTPA only (latent DenseNet)"])
if gen.result is not None:
    res[gen.name] = gen.result
else:
    display(Markdown(f"**Generated CTPA:** {gen.note}"))

# %%
cv.save_results(res, cv_dir)
table1 = cv.results_table(res)
display(save_table(table1, cfg, "table1_classification",
                   "Table 1 counterpart: PE classification (pooled test folds, Youden threshold "
                   "from each validation fold)", networks=NETS + "; " + gen.networks))  # fmt: skip

# %%
fig, ax = plt.subplots(figsize=(5, 5))
roc_curves(res, ax=ax, seed=cfg.seed)
ax.set_title("ROC, pooled test folds (95 % bootstrap band)")
save_figure(fig, cfg, "08_roc", networks=NETS)
plt.show()

# %% [markdown]
# ## Is CTPA better than the X-ray? DeLong's test
#
# Both classifiers score the same patients, so their AUCs are correlated; DeLong's test
# accounts for that.

# %%
display(save_table(cv.delong_table(res), cfg, "08_delong", "DeLong test of correlated AUCs",
                   networks=NETS))  # fmt: skip

# %% [markdown]
# ## Per fold

# %%
display(save_table(cv.per_fold(res), cfg, "08_per_fold", "Per-fold test results", networks=NETS))

# %% [markdown]
# ## How much signal is there to find?
#
# Before reading Table 1 for or against the method, measure what the cohort offers at
# this profile's size. A clot covers few voxels, and the VAE shrinks each slice by a
# further factor in-plane before the latent DenseNet sees it. The indirect signs are
# shared with confounded non-PE patients: the count of signs, read without error from
# the simulation's own records, bounds what any X-ray reader can reach here.

# %%
display(save_table(signal_budget(cfg, cohort), cfg, "08_signal_budget",
                   "The signal the classifiers can find",
                   networks="none (ground truth of the simulation)"))  # fmt: skip

# %% [markdown]
# ## Summary
#
# - The evaluation follows the paper: stratified six folds, validation-fold Youden
#   thresholds, pooled AUC with DeLong CIs.
# - On the simulated cohort, CTPA shows the clots and the X-ray only indirect signs, so
#   CTPA should win, and how close generated CTPA comes is the question of the method.
#   Read the tables against the signal budget above: where a clot is a few voxels, less
#   than one latent voxel, and the training folds hold a few dozen PE patients, a CI that
#   contains 0.5 means no signal was found, not that the method fails. The paper's
#   256 × 256 × 128 volumes and 900 patients put the clots within reach; the `paper`
#   profile runs this code at that size.
# - These are simulated patients: the numbers show the pipeline, not clinical
#   performance.
#
# ## What's next
#
# Chapter 9 asks where the latent classifier looks, with Grad-CAM.
