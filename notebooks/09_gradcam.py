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
# # 9. Where does the classifier look? Grad-CAM
#
# ## Overview
#
# The paper shows Grad-CAM {cite}`selvaraju2017gradcam` maps of its PE classifier on
# generated CTPA (Fig. 8): the network attends to the pulmonary arteries. The simulated
# cohort knows where every clot is, so this chapter can go one step further and **score**
# the maps.
#
# **Objectives**
#
# 1. Compute 3D Grad-CAM (captum) of each test fold's latent DenseNet for its PE patients and map
#    it from the latent back onto the CT.
# 2. Overlay it on CT slices with the ground-truth clot outline (Fig. 8 counterpart).
# 3. Score localisation (pointing game, mass on the clots) against chance.
# 4. Do the same on generated volumes when chapter 5 has produced them.
#
# **Prerequisites**: chapter 8 (the fold classifiers). Under a minute in `workshop`.

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
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval import gradcam as gc
from xr2ct_lib.eval.classifier_cv import fold_models
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.models.latents import load_latents, load_normalizer
from xr2ct_lib.networks import networks_for
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
    models, cohort, dict(zip(pe_test, z_real, strict=True)), norm, "real CTPA", seed=cfg.seed
)
show = pe_test[:4]
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
    models, cohort, {p: gen[p]["z"] for p in gen_pe}, norm, "generated CTPA", seed=cfg.seed
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
# ## Localisation score
#
# *Pointing game*: is the map's peak on a clot (dilated by 2 voxels)? *Mass*: the share of
# the map on the clots. Chance is the clots' share of the volume (a random peak, or a
# flat map); the random-map columns use smooth random maps instead.

# %%
scores = pd.concat([real_scores, gen_scores], ignore_index=True)
display(save_table(gc.localisation_summary(scores), cfg, "09_localisation",
                   "Grad-CAM localisation on PE test patients (mean over patients)",
                   networks=NETS))  # fmt: skip
scores.head(10)

# %% [markdown]
# ## Summary
#
# - Grad-CAM of the latent classifier is coarse (it lives on the latent grid), but it can
#   be scored against the clots that the simulated cohort knows.
# - A pointing-game rate or a mass well above chance means the classifier uses the clots;
#   near chance, it relies on other cues (indirect signs, global appearance): worth
#   knowing before trusting any such map.
#
# ## What's next
#
# The references page lists the sources; the README explains how to run the book on a
# real cohort with the real pretrained networks.
