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
# The paper shows Grad-CAM maps of its PE classifier on generated CTPA (Fig. 8): the
# network attends to the pulmonary arteries. The simulated cohort knows where every clot
# is, so this chapter can go one step further and **score** the maps.
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
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from xr2ct_lib.config import load_config
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval import gradcam as gc
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.models.classifiers import load_classifier
from xr2ct_lib.networks import networks_for
from xr2ct_lib.train import autoencoder as ae
from xr2ct_lib.viz.provenance import save_figure, save_table
from xr2ct_lib.viz.volumes import mask_outline

torch.set_num_threads(2)
cfg = load_config(profile, manifest, run_dir, seed, weights)
cohort = PreparedCohort(cfg.run_dir)
norm = ae.load_normalizer(cfg)
# every PE patient of a test fold whose classifier chapter 8 trained, read by that fold's
# model (which never saw the patient)
clf_dir = cfg.run_dir / "models" / "latent_classifier"
models = {k: load_classifier(clf_dir / f"fold{k}") for k in range(cfg.profile.n_folds)
          if (clf_dir / f"fold{k}" / "config.json").is_file()}  # fmt: skip
if not models:
    raise FileNotFoundError(f"no latent classifiers in {clf_dir}: run chapter 8 first")
fold_of = dict(zip(cohort.ids, cohort.folds, strict=True))
pe_test = [p for p, y in zip(cohort.ids, cohort.labels, strict=True)
           if y == 1 and fold_of[p] in models]  # fmt: skip
NETS = "latent DenseNet of each patient's test fold (trained here on real CTPA latents)"
print(cfg.describe(), f"| test folds {sorted(models)}: {len(pe_test)} PE patients")

# %% [markdown]
# ## Grad-CAM on real CTPA
#
# Grad-CAM weighs the feature maps of an inner dense block by the gradient of the PE
# logit. It lives on the latent grid (1/4 of the in-plane resolution in `workshop`, and
# coarser still after the dense block), so it is a coarse map by construction.


# %%
def cam_for(pid, z_raw, shape):
    z = ae.normalize_latents(z_raw, norm).astype(np.float32)
    return gc.gradcam_volume(models[fold_of[pid]], z, shape)


_, z_real = ae.load_latents(cfg, pe_test)
rows, cams = [], {}
for pid, z in zip(pe_test, z_real, strict=True):
    arrays = cohort.load(pid)
    cams[pid] = cam_for(pid, z, arrays["ct"].shape)
    s = gc.localisation_score(cams[pid], arrays["clot"])
    b = gc.random_baseline(arrays["clot"], n=30, seed=cfg.seed)
    rows.append({"patient": pid, "source": "real CTPA", **s, "random-map hit": b["hit"],
                 "random-map mass": b["mass_on_clot"]})  # fmt: skip

# %%
show = pe_test[:4]
fig, axes = plt.subplots(2, len(show), figsize=(3 * len(show), 6.2), squeeze=False)
for k, pid in enumerate(show):
    arrays = cohort.load(pid)
    clot = arrays["clot"]
    zs = int(np.argmax(clot.sum(axis=(1, 2))))
    for r, overlay in enumerate((False, True)):
        ax = axes[r, k]
        ax.imshow(arrays["ct"][zs], cmap="gray", vmin=-1, vmax=1)
        if overlay:
            ax.imshow(cams[pid][zs], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        mask_outline(ax, clot[zs], color="lime")
        ax.set_axis_off()
    axes[0, k].set_title(f"{pid}, slice {zs}", fontsize=8)
axes[0, 0].set_ylabel("CT")
fig.suptitle("Fig. 8 counterpart: Grad-CAM (bottom) of the latent classifier; clots in green")
fig.tight_layout()
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
if not gen_pe:
    display(Markdown("**Generated CTPA:** no generated volumes of these test folds (chapter 5)."))
for pid in gen_pe:
    arrays = cohort.load(pid)
    cam = cam_for(pid, gen[pid]["z"], arrays["ct"].shape)
    s = gc.localisation_score(cam, arrays["clot"])
    b = gc.random_baseline(arrays["clot"], n=30, seed=cfg.seed)
    rows.append({"patient": pid, "source": "generated CTPA", **s, "random-map hit": b["hit"],
                 "random-map mass": b["mass_on_clot"]})  # fmt: skip
    cams[f"gen:{pid}"] = cam
if gen_pe:
    fig, axes = plt.subplots(1, min(4, len(gen_pe)), figsize=(3 * min(4, len(gen_pe)), 3.2),
                             squeeze=False)  # fmt: skip
    for ax, pid in zip(axes[0], gen_pe[:4], strict=False):
        clot = cohort.load(pid)["clot"]
        zs = int(np.argmax(clot.sum(axis=(1, 2))))
        ax.imshow(gen[pid]["ct"][zs], cmap="gray", vmin=-1, vmax=1)
        ax.imshow(cams[f"gen:{pid}"][zs], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        mask_outline(ax, clot[zs], color="lime")
        ax.set_title(f"{pid} (generated), slice {zs}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
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
scores = pd.DataFrame(rows)
cols = ["hit", "random-map hit", "mass_on_clot", "random-map mass", "chance"]
summary = scores.groupby("source")[cols].mean()
summary.insert(0, "patients", scores.groupby("source").size())
display(save_table(summary, cfg, "09_localisation",
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
