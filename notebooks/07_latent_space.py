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
# # 7. The latent space: real, conditional and unconditional (Fig. 4)
#
# ## Overview
#
# The paper projects the latents of real test CTPA, of CTPA generated from the X-rays
# (conditional) and of unconditional samples with t-SNE and PCA (its Fig. 4): conditional
# samples land among the real ones, unconditional ones spread elsewhere.
#
# **Objectives**: project the three groups of half-volume latents with PCA, t-SNE and
# UMAP, and see where the generated ones fall.
#
# **Prerequisites**: chapters 4 and 5. Under a minute in `workshop`.

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from umap import UMAP

from xr2ct_lib.config import load_config
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.folds import fold_split
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.train import autoencoder as ae
from xr2ct_lib.train import pipeline as pl
from xr2ct_lib.viz.provenance import save_figure

torch.set_num_threads(2)
cfg = load_config(profile, manifest, run_dir, seed)
cohort = PreparedCohort(cfg.run_dir)
norm = ae.load_normalizer(cfg)
test_ids = [cohort.ids[i] for i in fold_split(cohort.folds, 0)["test"]]
gen = load_generated(cfg)
_, z_real = ae.load_latents(cfg, test_ids)
real = ae.normalize_latents(z_real, norm).reshape(-1, *cfg.profile.latent_shape)
cond = ae.normalize_latents(np.stack([gen[p]["z"] for p in test_ids]), norm)
cond = cond.reshape(-1, *cfg.profile.latent_shape)
model, _ = pl.train_xray2ctpa(cfg, test_fold=0)
uncond = pl.sample_unconditional(cfg, model, max(len(real) // 2, 4))  # half as many: CPU time
groups = {"real CTPA": real, "generated (conditional)": cond, "unconditional": uncond}
X = np.concatenate([g.reshape(len(g), -1) for g in groups.values()])
labels = np.concatenate([[k] * len(g) for k, g in groups.items()])
print(cfg.describe(), {k: len(v) for k, v in groups.items()}, "half-volume latents")

# %%
n = len(X)
projections = {
    "PCA": PCA(2, random_state=cfg.seed).fit_transform(X),
    "t-SNE": TSNE(2, perplexity=min(30, max(2, n // 4)), random_state=cfg.seed,
                  init="pca").fit_transform(X),
    "UMAP": UMAP(n_neighbors=min(15, n - 1), random_state=cfg.seed, n_jobs=1).fit_transform(X),
}  # fmt: skip
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
colors = {
    "real CTPA": "tab:blue",
    "generated (conditional)": "tab:orange",
    "unconditional": "tab:gray",
}
for ax, (name, xy) in zip(axes, projections.items(), strict=True):
    for g, c in colors.items():
        m = labels == g
        ax.scatter(xy[m, 0], xy[m, 1], s=12, c=c, label=g, alpha=0.75)
    ax.set_title(name)
    ax.set_xticks([])
    ax.set_yticks([])
axes[0].legend(fontsize=8)
fig.suptitle("Fig. 4 counterpart: half-volume latents of the test fold")
fig.tight_layout()
save_figure(fig, cfg, "07_latent_space", networks="X-ray2CTPA model trained here; in-book VAE")
plt.show()

# %%
centroid = {k: v.reshape(len(v), -1).mean(0) for k, v in groups.items()}
for k in ("generated (conditional)", "unconditional"):
    d = np.linalg.norm(centroid[k] - centroid["real CTPA"])
    print(f"distance of the {k} centroid to the real one: {d:.2f}")

# %% [markdown]
# ## Summary
#
# - Conditional samples should sit closer to the real latents than unconditional ones:
#   the X-ray embedding pulls the generation towards the patient.
# - With the book's short CPU training the groups overlap less cleanly than in the paper.
#
# ## What's next
#
# Chapter 8 asks the clinical question: can PE be read from the generated volumes?
