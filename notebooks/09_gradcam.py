# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 9. Where does the classifier look? Grad-CAM
#
# ## Overview
#
# The paper shows Grad-CAM {cite}`selvaraju2017gradcam` maps of its latent PE classifier on
# generated CTPA (Fig. 8) and reports that "the network concentrated on areas containing PE
# clots and the heart (particularly the right and left ventricular (RV, LV) chambers)",
# with maps broader than the clots, which it attributes to classifying in the latent
# space. The simulated cohort knows where every clot is, so this chapter can go one step
# further and **score** the maps, with a significance test against random maps.
#
# Two classifiers are mapped. The latent DenseNet is the paper's classifier family, which
# learns from patient labels only. Chapter 8's Table 1 CTPA row is the clot reader,
# pretrained on clot masks: it was taught where clots are, so its maps are expected to fall
# on them; scoring them checks that expectation and gives the scale a label-only
# classifier's maps can be read against.
#
# **Objectives**
#
# 1. Compute 3D Grad-CAM (captum) of each test fold's latent DenseNet for its PE patients and map
#    it from the latent back onto the CT.
# 2. Overlay it on CT slices with the ground-truth clot outline (Fig. 8 counterpart).
# 3. Score localisation (pointing game, mass on the clots) against random maps, with a
#    one-sided Wilcoxon signed-rank test over patients (p).
# 4. Do the same for the clot reader, and on generated volumes when chapter 5 has produced
#    them.
#
# **Prerequisites**: chapter 8 (the fold classifiers). About a minute and a half in
# `workshop` (86 s on one thread beside another notebook, reference_s 2.3).
#
# In a fresh clone, `.venv/bin/xr2ct run-notebooks --only 09 --with-prerequisites`
# runs the chapters this one reads, then this one (in JupyterLab: once, in a terminal).

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0
weights = "shipped"  # which VAE/encoder/generator: weights/<profile>/ or this run's own

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from xr2ct_lib import book
from xr2ct_lib.data.cohort import PreparedCohort, load_records
from xr2ct_lib.eval import gradcam as gc
from xr2ct_lib.eval.classifier_cv import fold_models
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.run.latents import load_latents, load_normalizer
from xr2ct_lib.run.networks import networks_for
from xr2ct_lib.train.readers import READERS
from xr2ct_lib.viz.panels import cam_overlays
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights)
cohort = PreparedCohort(cfg.run_dir)
norm = load_normalizer(cfg)
# every PE patient of a test fold whose classifier chapter 8 trained, read by that fold's
# model (which never saw the patient)
models = fold_models(cfg)
if not models:
    raise FileNotFoundError(f"no latent classifiers in {cfg.run_dir / 'models'}: run chapter 8")
pe_test = [p for p, y, k in zip(cohort.ids, cohort.labels, cohort.folds, strict=True)
           if y == 1 and k in models]  # fmt: skip
NETS = "latent DenseNet of each patient's test fold (trained here on real CTPA latents)"
READER_NETS = (
    "clot reader of each patient's test fold (chapter 8: "
    f"{READERS['clot'].describe(READERS['clot'].shipped(cfg))})"
)
print(f"test folds {sorted(models)}: {len(pe_test)} PE patients")

# %% [markdown]
# ## Grad-CAM on real CTPA
#
# Grad-CAM weighs the feature maps of an inner dense block by the gradient of the PE
# logit. It lives on the latent grid (1/4 of the in-plane resolution in `workshop`, and
# coarser still after the dense block), so it is a coarse map by construction.


# %%
_, z_real = load_latents(cfg, pe_test)
real_scores, cams = gc.score_patients(
    models,
    cohort,
    dict(zip(pe_test, z_real, strict=True)),
    norm,
    "real CTPA, latent DenseNet",
    seed=cfg.seed,
)
# Fig. 8 counterpart: patients with central clots first (the clots a 64³ volume shows best)
burden = load_records(cfg.run_dir)["burden"].reindex(pe_test).fillna("")
show = sorted(pe_test, key=lambda p: burden[p] != "central")[:4]
fig = cam_overlays({p: cohort.load(p)["ct"] for p in show}, {p: cams[p] for p in show},
                   {p: cohort.load(p)["clot"] for p in show},
                   "Fig. 8 counterpart: Grad-CAM (bottom) of the latent classifier; clots in "
                   "green")  # fmt: skip
save_figure(fig, cfg, "09_gradcam_real", networks=NETS)
plt.show()

# %% [markdown]
# ## Grad-CAM on generated CTPA
#
# The paper's Fig. 8 shows maps on generated volumes. The same code runs on chapter 5's
# volumes when they exist; the ground-truth clots are those of the real CT, which the
# generated volume should reproduce only approximately.

# %%
gen = load_generated(cfg)
gen_pe = [p for p in pe_test if p in gen]
gen_scores, gen_cams = gc.score_patients(
    models,
    cohort,
    {p: gen[p]["z"] for p in gen_pe},
    norm,
    "generated CTPA, latent DenseNet",
    seed=cfg.seed,
)
if not gen_pe:
    display(Markdown("**Generated CTPA:** no generated volumes of these test folds (chapter 5)."))
else:
    show = gen_pe[:4]
    fig = cam_overlays({p: gen[p]["ct"] for p in show}, {p: gen_cams[p] for p in show},
                       {p: cohort.load(p)["clot"] for p in show}, with_plain=False,
                       label=" (generated)")  # fmt: skip
    save_figure(
        fig, cfg, "09_gradcam_generated", networks=f"{NETS}; {networks_for(cfg).describe()}"
    )
    plt.show()

# %% [markdown]
# ## Grad-CAM of the clot reader (Table 1's CTPA row)
#
# The reader marks clot pixels slice by slice; its patient score adds up their
# probabilities. Its Grad-CAM weighs the feature maps of its last convolutional block (at
# the slice's resolution, where Grad-CAM is usually taken) by the gradient of the slice's
# summed clot probability, on real and on generated CTPA of the same PE patients, each read
# by its test fold's copy, at the size the reader reads (the real CT finer than the
# generator's, the generated CT resized to it; chapter 8). The latent DenseNet's maps above
# are far coarser: they live on the latent grid.

# %%
readers = fold_models(cfg, "clot_classifier")
if readers:
    # the real CT and its clots at the size the reader reads (chapter 8)
    CT_KEY, CLOT_KEY = cohort.reader_keys(cfg.profile)
    arrays = {p: cohort.load(p) for p in pe_test}
    vols = {p: a[CT_KEY] for p, a in arrays.items()}
    reader_scores, reader_cams = gc.score_clot_reader(
        readers, cohort, vols, "real CTPA, clot reader", seed=cfg.seed
    )
    gen_reader = {p: gen[p]["ct"] for p in gen_pe}
    reader_gen_scores, _ = gc.score_clot_reader(
        readers, cohort, gen_reader, "generated CTPA, clot reader", seed=cfg.seed
    )
    show = sorted(pe_test, key=lambda p: burden[p] != "central")[:4]
    fig = cam_overlays({p: vols[p] for p in show}, {p: reader_cams[p] for p in show},
                       {p: arrays[p][CLOT_KEY] for p in show},
                       "Grad-CAM (bottom) of the clot reader; clots in green")  # fmt: skip
    save_figure(fig, cfg, "09_gradcam_clot_reader", networks=READER_NETS)
    plt.show()
else:
    reader_scores = reader_gen_scores = None
    display(Markdown("**No clot reader:** chapter 8 ran without clot masks."))

# %% [markdown]
# ## Localisation score
#
# *Pointing game*: is the map's peak on a clot (dilated by 2 voxels)? *Mass*: the share of
# the map on the clots. Chance is the clots' share of the volume (a random peak, or a
# flat map); the random-map columns use smooth random maps instead, and the p columns
# test, over patients, whether the map beats its random maps (one-sided Wilcoxon
# signed-rank).

# %%
scores = pd.concat([real_scores, gen_scores, reader_scores, reader_gen_scores], ignore_index=True)
display(save_table(gc.localisation_summary(scores), cfg, "09_localisation",
                   "Grad-CAM localisation on PE test patients (mean over patients)",
                   networks=f"{NETS}; {READER_NETS}"))  # fmt: skip
summary = gc.localisation_summary(scores)
display(Markdown("\n".join(
    f"- {src}: {int(r.patients)} PE patients, pointing game {r.hit:.2f} against "
    f"{r['random-map hit']:.2f} for random maps (p = {r['p hit > random']:.3g}), mass on the "
    f"clots {r.mass_on_clot:.3f} against {r['random-map mass']:.3f} (p = "
    f"{r['p mass > random']:.3g})." for src, r in summary.iterrows())))  # fmt: skip

# %% [markdown]
# ## Summary
#
# - Grad-CAM of the latent classifier is coarse (it lives on the latent grid), but it can
#   be scored against the clots that the simulated cohort knows.
# - A pointing-game rate or a mass significantly above the random maps means the
#   classifier uses the clots; otherwise it relies on other cues (indirect signs such as
#   the heart, global appearance): worth knowing before trusting any such map. The
#   numbers above, not this text, say which holds in this run.
# - The clot reader was taught where clots are, so its maps are expected to fall on them on
#   real CTPA; on generated CTPA they can only fall on the clots the generator reproduced
#   where the real ones are.
#
# ## What's next
#
# The references page lists the sources; the README explains how to run the book on a
# real cohort with the real pretrained networks.
