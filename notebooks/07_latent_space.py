# ---
# jupyter:
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
# (conditional) and of unconditional samples with t-SNE {cite}`vandermaaten2008tsne` and
# PCA (its Fig. 4), and reports that the generated samples closely follow the real ones,
# especially in comparison to the unconditional samples.
#
# **Objectives**: project the three groups of half-volume latents with PCA, t-SNE and
# UMAP {cite}`mcinnes2018umap`, see where the generated ones fall, and measure how far
# each group's centre lies from the real one.
#
# **Prerequisites**: chapters 4 and 5. Under a minute in `workshop`.
#
# In a fresh clone, `.venv/bin/xr2ct run-notebooks --only 07 --with-prerequisites`
# runs the chapters this one reads, then this one (in JupyterLab: once, in a terminal).

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0
weights = "shipped"  # which VAE/encoder/generator: weights/<profile>/ or this run's own

# %%
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from xr2ct_lib import book
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval import latent_space as ls
from xr2ct_lib.generation.load import load_generator
from xr2ct_lib.run.networks import networks_for
from xr2ct_lib.viz.embeddings import projection_grid
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights)
cohort = PreparedCohort(cfg.run_dir)
model = load_generator(cfg)  # the shipped bundle, or chapter 4's live run
groups = ls.latent_groups(cfg, cohort, model)
NETS = networks_for(cfg).describe()
print({k: len(v) for k, v in groups.items()}, "half-volume latents")

# %% [markdown]
# ## Fig. 4: three projections of the test fold's latents

# %%
names = np.concatenate([[k] * len(g) for k, g in groups.items()])
projections = ls.project_2d(np.concatenate(list(groups.values())), cfg.seed)
colors = {ls.REAL: ("tab:blue", ls.REAL), ls.CONDITIONAL: ("tab:orange", ls.CONDITIONAL),
          ls.UNCONDITIONAL: ("tab:gray", ls.UNCONDITIONAL)}  # fmt: skip
fig = projection_grid(projections, names, colors,
                      "Fig. 4 counterpart: half-volume latents of the test fold")  # fmt: skip
save_figure(fig, cfg, "07_latent_space", networks=NETS)
plt.show()

# %% [markdown]
# ## How far is each group from the real latents?
#
# A projection can mislead (t-SNE and UMAP do not keep distances), so the distance between
# each group's mean latent and the real group's mean is measured in the latent space itself.

# %%
distances = ls.centroid_distances(groups)
display(save_table(distances, cfg, "07_centroid_distances",
                   "Distance of each group's centroid to the real test latents' centroid "
                   "(normalised latent space)", networks=NETS))  # fmt: skip

# %% [markdown]
# If the X-ray embedding pulls the generation towards the patient, the conditional samples
# should sit closer to the real latents than the unconditional ones. In this run:

# %%
display(Markdown(ls.centroid_reading(groups, seed=cfg.seed)))

# %% [markdown]
# ## Summary
#
# - Three groups of half-volume latents of the test fold, projected three ways, and the
#   distance of each group's centre to the real one.
# - How this run compares with the paper's Fig. 4 is read from the distances and their
#   interval above, not from the projections (t-SNE and UMAP do not keep distances).
#
# ## What's next
#
# Chapter 8 asks the clinical question: can PE be read from the generated volumes?
