# ---
# jupyter:
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
# The paper's claim rests on classification (Table 1, six folds, mean AUC with its 95 % CI):
# a classifier reading real CTPA reaches 0.90 [0.88–0.97], one reading the X-ray alone
# 0.691 [0.54–0.77], and reading the CTPA *generated* from that X-ray 0.80 [0.72–0.9].
# Table 7 compares CTPA classifiers: INSPECT on pixels (all 512 slices 0.90 [0.88–0.97],
# 128 slices 0.88 [0.8–0.95], 64 slices 0.85 [0.77–0.92]) and a 3D DenseNet on the VAE
# latents (0.827 [0.75–0.92]); on generated CTPA the latent classifier reaches 0.80
# [0.72–0.9] and INSPECT 0.74 [0.68–0.82].
#
# **Objectives**
#
# 1. Run the paper's evaluation: six stratified folds at patient level, a Youden
#    threshold {cite}`youden1950` chosen on the validation fold, the mean fold AUC ± SD
#    (the paper's statistic) and the pooled AUC with its DeLong 95 % CI
#    {cite}`delong1988,sun2014fastdelong`, accuracy, specificity, sensitivity, PPV, NPV.
# 2. Read real CTPA, finer than the generator does, with a clot reader (a slice U-Net
#    pretrained on simulated clot masks, the book's analogue of INSPECT), and the X-ray
#    with an X-ray reader (a CNN pretrained on simulated X-rays and their findings, the
#    book's analogue of the paper's RadImageNet network); fine-tune the latent DenseNet
#    pretrained on the simulated CTPA collection (the book's RSPECT) on each fold.
# 3. Read Table 1 beside the ceilings of the simulation (chapter 1).
# 4. Read the generated CTPA of the held-out folds 0 and 1 with each fold's real-CTPA
#    classifier, and compare it with the X-ray and the real CTPA of the same patients.
# 5. Ask Table 1's question where it can be answered: every reader on the same 300 fresh
#    simulated patients (a benchmark recorded with the bundle).
#
# **Prerequisites**: chapters 1–2 (cohort, latents); chapter 5 for the generated rows.
# About 3 minutes in `workshop` (186 s on one thread beside another notebook, reference_s
# 2.3).
#
# In a fresh clone, `.venv/bin/xr2ct run-notebooks --only 08 --with-prerequisites`
# runs the chapters this one reads, then this one (in JupyterLab: once, in a terminal).
#
# **Your own cohort** (`manifest` and `run_dir` of `xr2ct train`): the sections that need
# what only the simulation records (clot masks for the clot reader, the ceilings, the
# signal budget) say that they are skipped when the cohort lacks it; the latent DenseNet
# then is the CTPA row of Table 1, and a CNN trained per fold reads the X-rays of a cohort
# without simulated patients.

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0
weights = "shipped"  # which VAE/encoder/generator: weights/<profile>/ or this run's own

# %%
from IPython.display import Markdown, display

from xr2ct_lib import book
from xr2ct_lib.eval import crossval as cv
from xr2ct_lib.eval.pe_study import PEStudy
from xr2ct_lib.viz.curves import output_auc_bars, roc_figure
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights)
study = PEStudy.load(cfg)
# the profile's cv_folds: smoke runs two folds to keep CI short, the others all six
print(study.describe())

# %% [markdown]
# ## CTPA only: a pretrained clot reader
#
# The paper's best CTPA reader is INSPECT {cite}`huang2023inspect`: "The model is
# pre-trained with 2D label supervision for every slice in a 3D volume" (a 2D ResNet-101,
# then frozen), then an LSTM over the slices. Its strength is that pretraining: a patient
# label says nothing about where the clot is, and we do not expect a few dozen training
# patients to teach that alone.
#
# The book's analogue is a **clot reader**: a small MONAI U-Net {cite}`cardoso2022monai`
# that reads a few adjacent slices and marks clot pixels, pretrained on the clot masks of
# extra patients that the simulator makes in memory from seeds the cohort never uses
# (`xr2ct pretrain-clot-reader`, shipped in `weights/<profile>-clot-reader`). A patient's
# score is its expected number of clot voxels (the sum of its clot probabilities). It has
# seen no patient of this cohort, so every fold reads with it as it is, and a fold's
# validation patients only set its threshold. Its pretraining patients come from the same
# simulator as the cohort: an in-domain pretraining that real data rarely gets. Without a
# shipped reader (the `paper` profile, or a cohort of your own with clot masks) a segmenter
# is trained per fold from the training folds' clot masks.
#
# The reader reads the CT finer than the generator does: the same lung crop, resized to the
# profile's `reader_ct_size` (96×72×96 in the workshop profile, about the simulation's own
# 3 mm spacing, against the generator's 64³). The paper's INSPECT likewise reads every
# original slice of a CTPA while the diffusion model works with 64, and its Table 7 shows
# what the slices are worth: AUC 0.90 with 512 slices, 0.88 with 128, 0.85 with 64. Volumes
# of the generator's size (generated CTPA, and the real CT at that size in Table 7 below)
# are read by the same reader, resized to its size.

# %%
print(study.clot_reader())

# %% [markdown]
# ## CTPA only: the latent DenseNet (Table 7)
#
# A MONAI 3D DenseNet reads the normalised VAE latent of a half volume; each half is a
# sample, and a patient's score is the mean over its two halves. It learns from patient
# labels only. The paper's "CTPA latent classifier" is pretrained on RSPECT latents and then
# fine-tuned on its cohort; the book's is pretrained on the latents of its simulated CTPA
# collection (`xr2ct build-collection`, then `xr2ct pretrain-latent-classifier`; seeds
# disjoint from the cohort's), and each fold fine-tunes a copy of it on its training folds,
# keeping the pretrained weights unless an epoch does better on the validation fold. Without
# a shipped classifier made for this run's VAE (the `trained` weights, or the `paper`
# profile) each fold trains one from scratch. The same pretrained classifier is the one whose
# loss steers the shipped generator's X-ray stage (chapter 4). Each fold's model is saved with
# the patients it was trained on.

# %%
print(study.latent_densenet())

# %% [markdown]
# ## X-ray only: a pretrained X-ray reader
#
# The paper's X-ray baseline fine-tunes RadImageNet {cite}`mei2022radimagenet`, "a
# ResNet-50-based model pretrained on millions of radiologic images" (the paper's methods;
# `xr2ct_lib.models.classifiers.load_radimagenet_resnet50` loads those weights when
# present). A CNN that meets its first radiographs in the training folds' X-rays has
# nothing of the kind, and we do not expect it to learn much from them alone.
#
# The book's analogue of the pretrained network is an **X-ray reader**: a small CNN
# pretrained on the X-rays of extra patients that the simulator makes in memory from seeds
# the cohort never uses (`xr2ct pretrain-cxr-reader`, shipped in
# `weights/<profile>-cxr-reader`). It has one output for PE and one for each finding a
# radiograph can show (right-heart strain, an enlarged pulmonary artery, infarct, pneumonia,
# effusion on either side, Westermark oligaemia, LV cardiomegaly), supervised by the
# simulation's records: it learns the findings and how they weigh on PE, as a radiologist
# does. It has seen no patient of this cohort, so every fold reads the X-rays with its PE
# output as it is, and a fold's validation patients only set its threshold. Like the clot
# reader, its pretraining is in-domain, which real data rarely gets. Without a shipped reader
# (the `paper` profile, or a cohort of your own) a CNN is trained per fold from scratch.

# %%
print(study.xray_reader())

# %% [markdown]
# ### What the X-ray reader reads
#
# Each output of the reader against the simulation's ground truth on the cohort's X-rays
# (every patient: the reader saw none), and, where its benchmark was recorded with its
# weights, on fresh simulated patients. A finding the reader cannot see on the radiograph
# cannot help its PE output, whatever the finding says about PE in the records.

# %%
outputs = study.xray_outputs()
XRAY = study.nets["cxr"]
display(save_table(outputs, cfg, "08_xray_reader_outputs", "X-ray reader: AUC of each output "
                   "against the simulation's ground truth", networks=XRAY))  # fmt: skip
save_figure(output_auc_bars(outputs, "What the X-ray reader reads on the radiograph"), cfg,
            "08_xray_reader_outputs", networks=XRAY)  # fmt: skip
display(Markdown(study.xray_outputs_reading(outputs)))

# %% [markdown]
# ## Generated CTPA
#
# Chapter 5 generated the patients of folds 0 and 1, which no shipped bundle trained on.
# Each generated volume is read by the real-CTPA classifier of its test fold, which never
# saw the patient (checked against the ids each model was trained on), at that fold's
# validation threshold: the clot reader reads the volume, the latent DenseNet its
# latent (of the same VAE as the real latents it learnt from).

# %%
display(Markdown(study.generated_ctpa()))
GEN = study.generated.networks

# %% [markdown]
# ## Sign transfer: what the generator carries over from the X-ray
#
# No paper reports this table. For each PE sign a radiograph can show (right-heart strain as
# the RV/LV diameter ratio, the pulmonary trunk diameter, the pleural effusion volume), a
# linear probe measures the sign on a CTPA's VAE latent, the space the generator works in: a
# ridge regression from the latent to the sign's value in the cohort records, fitted on the
# **real** CTPA's latents of the other folds (sign values only, never the PE label;
# `xr2ct_lib.eval.sign_measures`). A generated CTPA is a latent decoded by the VAE, and a
# probe fitted on real volumes does not read decoded ones (it loses the signs even on the
# VAE's reconstruction of the real CT), so real and generated CTPA are both read as latents,
# by one probe, each held-out patient's by the probe fitted without its fold. Its correlation
# with the truth (Spearman ρ) says how much of the sign survives; its AUC by PE label, how
# much of the sign's evidence.

# %%
signs = study.sign_transfer()
display(save_table(signs, cfg, "08_sign_transfer", "Sign transfer: X-ray-visible PE signs "
                   "measured on the latents of real and generated CTPA of the held-out patients "
                   "(Spearman ρ with the recorded truth; AUC by PE label)", networks="ridge "
                   "probes fitted here on real CTPA latents; " + GEN))  # fmt: skip
display(Markdown(study.sign_reading(signs)))

# %% [markdown]
# ## Table 7: CTPA classifiers on original and generated CTPA
#
# With a reader of finer CT (the profile's `reader_ct_size`), the same fold readers read the
# real CT twice: at their own size (Table 1's CTPA row) and at the generator's size,
# resized, the grid a generated CTPA lives on. The difference between the two rows is what
# the coarser grid costs before any generation error (in the paper, INSPECT on 512 slices
# against 64: 0.90 against 0.85, Table 7); the generated row is best compared with the
# second. The latent DenseNet reads neither grid but the VAE's latents: it can find at most
# what the VAE keeps of the clots, which the fresh-patient table below estimates by the clot
# reader on the real CTPA's reconstruction, decoded from its latents.

# %%
display(save_table(study.table7(), cfg, "table7_ctpa_classifiers", "Table 7 counterpart: CTPA "
                   "classifiers (pooled test folds; fold AUC: mean ± SD over test folds)",
                   networks=study.networks(GEN)))  # fmt: skip

# %% [markdown]
# ## Table 1, beside the ceilings
#
# The ceilings (chapter 1) are the AUC an ideal reader of the simulation's own records
# reaches on the same patients from what each modality shows: the X-ray's findings, those
# of them a CT can depict (the most a CTPA generated from the X-ray can carry), the CT's
# indirect signs, and the CT with its clots. They are computed from ground truth, not by
# any network. A cohort without simulated patients has no ceilings: Table 1 stands alone.

# %%
display(save_table(study.table1(), cfg, "table1_classification", "Table 1 counterpart: PE "
                   "classification (pooled test folds, Youden threshold from each validation "
                   "fold; fold AUC: mean ± SD over test folds)",
                   networks=study.networks(GEN)))  # fmt: skip
display(save_table(study.beside_ceilings(), cfg, "08_table1_ceilings", "Table 1 beside the "
                   "ceilings of the simulation on the same patients",
                   networks=study.networks("ceilings: none (ground truth)")))  # fmt: skip

# %% [markdown]
# ## Table 1 on fresh patients: the question asked where it can be answered
#
# The held-out folds hold 40 patients: an AUC interval of about ±0.17, too wide to tell a
# generated CTPA from the X-ray it came from. The simulator can make as many patients as a
# question needs. `benchmarks/table1_fresh.py` simulates fresh patients (X-ray and CTPA,
# seeds that neither the cohort nor any pretraining set uses), generates each one's CTPA
# from its X-ray with the bundle, and reads every patient with the X-ray reader, the clot
# reader and the pretrained latent classifier (on real and on generated CTPA), the clot
# reader on the VAE's reconstruction of the real CTPA (a measure of the clot evidence the
# latents keep), and with the paper's generated-CTPA latent classifier (the latent
# classifier fine-tuned on generated latents, cross-fitted over two halves of the patients
# so that none is scored by a model that saw it). Its result is recorded beside the bundle,
# tied to its weights, and read here. Beside it, the ceilings on the same patients. The
# information bound holds whatever the table says: a CTPA generated from an X-ray carries no
# evidence the X-ray lacks (the `shared` ceiling), so a generated row above the X-ray reader
# would mean a better reader of the same evidence, never new evidence.

# %%
display(save_table(study.fresh_table(), cfg, "08_table1_fresh", **study.fresh_labels()))
display(Markdown(study.fresh_reading()))

# %%
save_figure(roc_figure(study.results, seed=cfg.seed), cfg, "08_roc", networks=study.networks())

# %% [markdown]
# ## DeLong's test on the same patients
#
# The classifiers score the same patients, so their AUCs are correlated; DeLong's test
# accounts for that. Each pair is compared on the patients both scored: the generated
# rows on the held-out folds only.

# %%
delong = cv.delong_table(study.results)
display(save_table(delong, cfg, "08_delong", "DeLong test of correlated AUCs",
                   networks=study.networks()))  # fmt: skip

# %% [markdown]
# ## Per fold

# %%
display(save_table(cv.per_fold(study.results), cfg, "08_per_fold", "Per-fold test results",
                   networks=study.networks()))  # fmt: skip

# %% [markdown]
# ## How much signal is there to find?
#
# A clot covers few voxels, and the VAE shrinks each slice by a further factor in-plane
# before the latent DenseNet sees it: one reason to expect the latent classifier, which
# learns from patient labels only, to find less than the clot reader.

# %%
display(
    save_table(
        study.signal_budget(),
        cfg,
        "08_signal_budget",
        "The signal the classifiers can find",
        networks="none (ground truth: the clot masks)",
    )
)

# %% [markdown]
# ## Where the clot reader finds PE
#
# The simulation knows each PE patient's clot burden (chapter 1): central or saddle casts in
# the trunk and main arteries, lobar casts, or segmental clots only. The clot reader's
# pooled test scores of each class are compared with those of the patients without PE, beside
# the size of the clots and the median CT value of their voxels in the CT the reader reads
# (contrast-enhanced lumen is bright; a clot voxel near −100 HU, the window's floor, is mostly
# lung air: partial volume at 3 mm voxels). A class holds a few dozen patients at most, so
# its AUC can sit well away from what the reader does on the simulation at large; where the
# shipped reader's benchmark on fresh simulated patients was recorded with its weights, it
# is shown below the table for comparison.

# %%
display(save_table(study.auc_by_burden(), cfg, "08_auc_by_burden", "Clot reader AUC by "
                   "clot-burden class", networks=study.networks()))  # fmt: skip
display(Markdown(study.clot_heldout_line()))

# %% [markdown]
# ## Summary

# %%
display(Markdown(study.summary(delong)))

# %% [markdown]
# ## What's next
#
# Chapter 9 asks where the classifiers look, with Grad-CAM.
