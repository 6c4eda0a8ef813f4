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
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from xr2ct_lib import book
from xr2ct_lib.data.cohort import PreparedCohort, load_records
from xr2ct_lib.eval import classifier_cv as ccv
from xr2ct_lib.eval import crossval as cv
from xr2ct_lib.eval.ceilings import beside_table1
from xr2ct_lib.eval.fresh import load_record as load_fresh_record
from xr2ct_lib.eval.fresh import reading as fresh_reading
from xr2ct_lib.eval.fresh import record_table as fresh_table
from xr2ct_lib.eval.generated import generated_rows, load_generated
from xr2ct_lib.eval.sign_measures import has_signs, sign_transfer
from xr2ct_lib.eval.sign_measures import reading as sign_reading
from xr2ct_lib.eval.signal import auc_by_burden, signal_budget
from xr2ct_lib.run.latents import load_latents
from xr2ct_lib.run.networks import networks_for
from xr2ct_lib.train.readers import READERS
from xr2ct_lib.train.readers.cxr import outputs_reading, outputs_table
from xr2ct_lib.viz.curves import output_auc_bars, roc_curves
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights)
cohort = PreparedCohort(cfg.run_dir)
ids, labels, folds = cohort.ids, cohort.labels, cohort.folds
_, z = load_latents(cfg, ids, normalized=True)  # in the order of `labels`
records = load_records(cfg.run_dir)  # empty for a cohort without simulated patients
clots = cohort.stack("clot")
HAS_CLOTS = bool(clots.any())  # clot masks: the simulation's, or a cohort's clot_path column
SIMULATED = bool((cohort.index["source"] == "phantom").any())
DATA = "simulated cohort" if SIMULATED else f"cohort of {cfg.manifest.name}"
CLOT = "CTPA only (clot reader)"
cv_dir = cfg.run_dir / "cv"
# the profile's cv_folds: smoke runs two folds to keep CI short, the others all six
print(f"{len(ids)} patients, {labels.mean():.0%} PE; test folds {cfg.profile.cv_test_folds}")

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
res = {}
ct = cohort.stack("ct")  # the generator's size
ct_r, clots_r = cohort.reader_volumes(cfg.profile)  # the reader's size
FINER = ct_r.shape[1:] != ct.shape[1:]
seeds = records["phantom_seed"].dropna() if "phantom_seed" in records else ()
reader = READERS["clot"].shipped(cfg, seeds) if HAS_CLOTS else None
CLOT_NETS = READERS["clot"].describe(reader)
print(f"CT read by the clot reader: {ct_r.shape[1:]}; by the generator: {ct.shape[1:]}")
if HAS_CLOTS:
    res[CLOT] = ccv.cv_clot_classifier(cfg, ct_r, clots_r, labels, folds, ids, init=reader,
                                       epochs=0 if reader is not None else None)  # fmt: skip
    print(CLOT_NETS)
else:
    display(Markdown("**Skipped:** no patient of this cohort has a clot mask (`clot_path`), "
                     "so there is nothing to supervise the clot reader with."))  # fmt: skip

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
latent_init = READERS["latent"].shipped(cfg, seeds)
LATENT_NETS = READERS["latent"].describe(latent_init)
latent = ccv.cv_latent_classifier(cfg, z, labels, folds, ids, init=latent_init)
print(LATENT_NETS)
if not HAS_CLOTS:  # the CTPA row of Table 1 without clot masks
    res["CTPA only (latent DenseNet)"] = latent

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
cxr = cohort.stack("cxr")
xray_reader = READERS["cxr"].shipped(cfg, seeds) if SIMULATED else None
XRAY_NETS = READERS["cxr"].describe(xray_reader)
NETS = (f"{CLOT_NETS}; " if HAS_CLOTS else "") + f"{LATENT_NETS}; {XRAY_NETS}"
res["CXR only (CNN)"] = ccv.cv_cxr_classifier(cfg, cxr, labels, folds, ids, reader=xray_reader)
print(XRAY_NETS)

# %% [markdown]
# ### What the X-ray reader reads
#
# Each output of the reader against the simulation's ground truth on the cohort's X-rays
# (every patient: the reader saw none), and, where its benchmark was recorded with its
# weights, on fresh simulated patients. A finding the reader cannot see on the radiograph
# cannot help its PE output, whatever the finding says about PE in the records.

# %%
if xray_reader is not None and not records.empty:
    fresh_x = READERS["cxr"].heldout_record(cfg.profile.name)
    outputs = outputs_table(xray_reader, cxr, records.reindex(ids), fresh_x)
    display(save_table(outputs, cfg, "08_xray_reader_outputs",
                       "X-ray reader: AUC of each output against the simulation's ground truth",
                       networks=XRAY_NETS))  # fmt: skip
    fig = output_auc_bars(outputs, "What the X-ray reader reads on the radiograph")
    save_figure(fig, cfg, "08_xray_reader_outputs", networks=XRAY_NETS)
    plt.show()
    display(Markdown(outputs_reading(outputs)))
    if fresh_x is not None:
        display(Markdown(READERS["cxr"].heldout_line(fresh_x)))
else:
    display(Markdown("No X-ray reader outputs: they need a shipped X-ray reader and the "
                     "simulation's records."))  # fmt: skip

# %% [markdown]
# ## Generated CTPA
#
# Chapter 5 generated the patients of folds 0 and 1, which no shipped bundle trained on.
# Each generated volume is read by the real-CTPA classifier of its test fold, which never
# saw the patient (checked against the ids each model was trained on), at that fold's
# validation threshold: the clot reader reads the volume, the latent DenseNet its
# latent (of the same VAE as the real latents it learnt from).

# %%
y_by_id = dict(zip(ids, labels, strict=True))
gen_latent = generated_rows(cfg, y_by_id, latent, "Generated CTPA (latent DenseNet)",
                           reader="latent_classifier")  # fmt: skip
# Table 1's generated row is read by the clot reader, or the latent DenseNet without one
gen = generated_rows(cfg, y_by_id, res[CLOT], "Generated CTPA") if HAS_CLOTS else gen_latent
if gen.result is not None:
    res[gen.name] = gen.result
display(Markdown(f"**Generated CTPA:** {gen.note}."))

# %% [markdown]
# ## Sign transfer: what the generator carries over from the X-ray
#
# No paper reports this table. For each PE sign a radiograph can show (right-heart strain as
# the RV/LV diameter ratio, the pulmonary trunk diameter, the pleural effusion volume), a
# linear probe measures the sign on a volume: a ridge regression from the volume, averaged
# over 4³-voxel blocks, to the sign's value in the cohort records, fitted on **real** CTPA of
# the other folds (sign values only, never the PE label;
# `xr2ct_lib.eval.sign_measures`). The same probe then measures the real and the generated
# CTPA of each held-out patient. Its correlation with the truth (Spearman ρ) says how much of
# the sign survives; its AUC by PE label, how much of the sign's evidence.

# %%
if gen.result is not None and has_signs(records):
    gen_ct = {p: v["ct"] for p, v in load_generated(cfg).items()}
    sign_table = sign_transfer(ct, records, labels, folds, gen_ct, ids)
    display(save_table(sign_table, cfg, "08_sign_transfer",
                       "Sign transfer: X-ray-visible PE signs measured on real and generated "
                       "CTPA of the held-out patients (Spearman ρ with the recorded truth; AUC "
                       "by PE label)", networks="ridge probes fitted here on real CTPA; "
                       + gen.networks))  # fmt: skip
    display(Markdown(sign_reading(sign_table)))
else:
    display(Markdown("No sign-transfer table: it needs chapter 5's generated volumes and "
                     "the signs measured in the cohort records."))  # fmt: skip

# %% [markdown]
# ## Table 7: CTPA classifiers on original and generated CTPA
#
# With a reader of finer CT (the profile's `reader_ct_size`), the same fold readers read the
# real CT twice: at their own size (Table 1's CTPA row) and at the generator's size,
# resized, the grid a generated CTPA lives on. The difference between the two rows is what
# the coarser grid costs before any generation error (in the paper, INSPECT on 512 slices
# against 64: 0.90 against 0.85, Table 7); the generated row is best compared with the
# second.

# %%
table7 = {}
if HAS_CLOTS:
    table7[f"Clot reader, real CT at {'×'.join(map(str, ct_r.shape[1:]))}"] = res[CLOT]
if HAS_CLOTS and FINER:  # the same fold readers on the generator's coarser CT, resized
    table7[f"Clot reader, real CT at the generator's {'×'.join(map(str, ct.shape[1:]))}"] = (
        ccv.cv_saved_clot_classifier(cfg, ct, labels, folds, ids)
    )
table7["Latent DenseNet (VAE latents, labels only)"] = latent
if gen.result is not None and HAS_CLOTS:
    table7["Generated CTPA, clot reader"] = gen.result
if gen_latent.result is not None:
    table7["Generated CTPA, latent DenseNet"] = gen_latent.result
display(save_table(cv.results_table(table7), cfg, "table7_ctpa_classifiers",
                   "Table 7 counterpart: CTPA classifiers (pooled test folds; fold AUC: mean ± "
                   "SD over test folds)", networks=NETS + "; " + gen.networks))  # fmt: skip

# %% [markdown]
# ## Table 1, beside the ceilings
#
# The ceilings (chapter 1) are the AUC an ideal reader of the simulation's own records
# reaches on the same patients from what each modality shows: the X-ray's findings, those
# of them a CT can depict (the most a CTPA generated from the X-ray can carry), the CT's
# indirect signs, and the CT with its clots. They are computed from ground truth, not by
# any network. A cohort without simulated patients has no ceilings: Table 1 stands alone.

# %%
cv.save_results({**res, "Latent DenseNet": latent}, cv_dir)
table1 = cv.results_table(res)
display(save_table(table1, cfg, "table1_classification",
                   "Table 1 counterpart: PE classification (pooled test folds, Youden threshold "
                   "from each validation fold; fold AUC: mean ± SD over test folds)",
                   networks=NETS + "; " + gen.networks))  # fmt: skip
tested = next(iter(res.values())).pooled().patient_id  # the CTPA row's patients
beside = beside_table1(table1, records.reindex(tested).dropna(how="all"))
if records.empty:
    display(Markdown("**Ceilings skipped:** this cohort has no simulated patients, whose "
                     "records the ceilings are computed from."))  # fmt: skip
else:
    display(save_table(beside, cfg, "08_table1_ceilings",
                       "Table 1 beside the ceilings of the simulation on the same patients",
                       networks=NETS + "; ceilings: none (ground truth)"))  # fmt: skip

# %% [markdown]
# ## Table 1 on fresh patients: the question asked where it can be answered
#
# The held-out folds hold 40 patients: an AUC interval of about ±0.17, too wide to tell a
# generated CTPA from the X-ray it came from. The simulator can make as many patients as a
# question needs. `benchmarks/table1_fresh.py` simulates fresh patients (X-ray and CTPA,
# seeds that neither the cohort nor any pretraining set uses), generates each one's CTPA
# from its X-ray with the bundle, and reads every patient with the X-ray reader, the clot
# reader and the pretrained latent classifier (on real and on generated CTPA), and with the
# paper's generated-CTPA latent classifier (the latent classifier fine-tuned on generated
# latents, cross-fitted over two halves of the patients so that none is scored by a model
# that saw it). Its result is recorded beside the bundle, tied to its weights, and read here.
# Beside it, the ceilings on the same patients. The information bound holds whatever the
# table says: a CTPA generated from an X-ray carries no evidence the X-ray lacks (the
# `shared` ceiling), so a generated row above the X-ray reader would mean a better reader of
# the same evidence, never new evidence.

# %%
fresh_t1 = load_fresh_record(networks_for(cfg).bundle) if cfg.weights == "shipped" else None
if fresh_t1 is not None:
    display(save_table(fresh_table(fresh_t1), cfg, "08_table1_fresh",
                       f"Table 1 on {fresh_t1['patients']} fresh simulated patients "
                       f"({fresh_t1['pe_patients']} with PE): DeLong 95 % CIs, each row against "
                       f"the X-ray reader", networks=f"{fresh_t1['bundle']}; "
                       + "; ".join(fresh_t1["networks"].values())))  # fmt: skip
    display(Markdown(fresh_reading(fresh_t1)))
else:
    display(Markdown("No fresh-patient benchmark is recorded for these weights: "
                     f"`python benchmarks/table1_fresh.py --profile {cfg.profile.name} "
                     "--record`."))  # fmt: skip

# %%
fig, ax = plt.subplots(figsize=(6.5, 6))
roc_curves(res, ax=ax, seed=cfg.seed)
ax.set_title("ROC, pooled test folds (95 % bootstrap band)")
save_figure(fig, cfg, "08_roc", networks=NETS)
plt.show()

# %% [markdown]
# ## DeLong's test on the same patients
#
# The classifiers score the same patients, so their AUCs are correlated; DeLong's test
# accounts for that. Each pair is compared on the patients both scored: the generated
# rows on the held-out folds only.

# %%
delong = cv.delong_table(res)
display(save_table(delong, cfg, "08_delong", "DeLong test of correlated AUCs", networks=NETS))

# %% [markdown]
# ## Per fold

# %%
display(save_table(cv.per_fold(res), cfg, "08_per_fold", "Per-fold test results", networks=NETS))

# %% [markdown]
# ## How much signal is there to find?
#
# A clot covers few voxels, and the VAE shrinks each slice by a further factor in-plane
# before the latent DenseNet sees it: one reason to expect the latent classifier, which
# learns from patient labels only, to find less than the clot reader.

# %%
if HAS_CLOTS:
    display(save_table(signal_budget(cfg, cohort), cfg, "08_signal_budget",
                       "The signal the classifiers can find",
                       networks="none (ground truth: the clot masks)"))  # fmt: skip
else:
    display(Markdown("**Skipped:** the signal budget measures the clot masks, and this "
                     "cohort has none."))  # fmt: skip

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
if HAS_CLOTS and "burden" in records.columns:
    display(save_table(auc_by_burden(res[CLOT], records, ct_r, clots_r, ids),
                       cfg, "08_auc_by_burden", "Clot reader AUC by clot-burden class",
                       networks=NETS))  # fmt: skip
    fresh = READERS["clot"].heldout_record(cfg.profile.name) if reader is not None else None
    if fresh is not None:
        display(Markdown(READERS["clot"].heldout_line(fresh)))

# %% [markdown]
# ## Summary

# %%
display(Markdown(cv.reading(res, beside, delong, data=DATA)))

# %%
display(Markdown(
    "- The evaluation follows the paper: stratified six folds, validation-fold Youden "
    "thresholds, mean fold AUC ± SD and pooled AUC with DeLong CIs.\n"
    + ("- These are simulated patients: the numbers show the pipeline, not clinical "
       "performance." if SIMULATED else
       f"- These numbers are from the {DATA}, with networks trained in this run folder "
       f"({len(ids)} patients): read them with their confidence intervals.")
))  # fmt: skip

# %% [markdown]
# ## What's next
#
# Chapter 9 asks where the classifiers look, with Grad-CAM.
