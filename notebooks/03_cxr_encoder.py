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
# # 3. The X-ray encoder: the condition of the diffusion model
#
# ## Overview
#
# The diffusion model is conditioned on a 512-d embedding of the chest X-ray. The paper
# uses the frozen image encoder of BiomedCLIP, a CLIP model trained on 15 million
# biomedical image–caption pairs, and feeds the embedding to every ResNet block of the
# 3D U-Net. What matters for generation is that the embedding carries information about
# the patient's CT.
#
# **Objectives**
#
# 1. Look at what the encoder sees: the preprocessed X-rays and DRRs.
# 2. Train (or, in `paper`, load) the encoder; in `smoke`/`workshop` a small CNN trained
#    CLIP-style against each patient's CT latent, first on DRRs, then on X-rays.
# 3. Measure how much CT information the embedding holds: CXR→CT retrieval on the test
#    fold, against chance.
# 4. Look at the embeddings in 2D, coloured by PE label, and cache them for chapter 4.
#
# **Prerequisites**: chapters 1 and 2 (cohort, latents). About 1.5 minutes in `workshop`.

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from sklearn.decomposition import PCA

from xr2ct_lib.config import load_config
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.folds import fold_split
from xr2ct_lib.models.cxr_encoder import OpenCLIPImageEncoder
from xr2ct_lib.train import autoencoder as ae
from xr2ct_lib.train import encoder as enc_train
from xr2ct_lib.viz.provenance import save_figure, save_table

torch.set_num_threads(2)
cfg = load_config(profile, manifest, run_dir, seed)
cohort = PreparedCohort(cfg.run_dir)
split = fold_split(cohort.folds, test_fold=0)
_, latents = ae.load_latents(cfg)
latents = ae.normalize_latents(latents, ae.load_normalizer(cfg)).astype(np.float32)
print(cfg.describe(), "| latents", latents.shape)

# %% [markdown]
# ## What the encoder sees
#
# Each X-ray is normalised (0.5–99.5 percentile window) and resized to a square
# three-channel image: 224×224 for BiomedCLIP, smaller in the book's profiles.

# %%
show = [cohort.ids[i] for i in split["test"][:6]]
fig, axes = plt.subplots(2, len(show), figsize=(2 * len(show), 4.3))
for k, pid in enumerate(show):
    arrays = cohort.load(pid)
    for r, key in enumerate(("cxr", "drr")):
        axes[r, k].imshow(arrays[key].transpose(1, 2, 0))
        axes[r, k].set_xticks([])
        axes[r, k].set_yticks([])
    label = "PE" if cohort.labels[cohort.ids.index(pid)] else "no PE"
    axes[0, k].set_title(f"{pid} ({label})", fontsize=8)
axes[0, 0].set_ylabel("X-ray")
axes[1, 0].set_ylabel("DRR")
fig.suptitle(f"Encoder inputs ({cfg.profile.cxr_size}×{cfg.profile.cxr_size}×3)")
fig.tight_layout()
save_figure(fig, cfg, "03_encoder_inputs")
plt.show()

# %% [markdown]
# ## Training the encoder
#
# Without BiomedCLIP's weights, the book trains a small CNN so that the X-ray's embedding
# and a projection of the same patient's CT latent agree, and differ from other
# patients' (a symmetric InfoNCE loss, as CLIP). The first third of the steps uses the
# clean DRRs, the rest the degraded X-rays, mirroring the paper's DRR-then-CXR stages.
# Only the training folds are used.

# %%
if cfg.profile.encoder_steps == 0:
    encoder, history = OpenCLIPImageEncoder.from_local(), None
else:
    encoder, history = enc_train.train_cxr_encoder(cfg, cohort, latents, split["train"])
print(encoder.describe())
if history is not None:
    fig, ax = plt.subplots(figsize=(6, 2.8))
    for col, name in [("drr_loss", "on DRRs"), ("cxr_loss", "on X-rays")]:
        if col in history:
            ax.plot(history["step"], history[col], lw=0.8, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title("CXR encoder training")
    ax.legend()
    save_figure(fig, cfg, "03_encoder_training", networks=encoder.describe())
    plt.show()

# %% [markdown]
# ## Does the embedding know the CT? Retrieval on the test fold
#
# For every test patient we rank all test CTs by the similarity of their projected latent
# to the X-ray's embedding, and count how often the patient's own CT comes first (top-1)
# or among the first five (top-5). Chance is 1/N and 5/N. This needs the projection head
# trained alongside the encoder, so it is reported for the stand-in only.

# %%
embeddings = enc_train.embed_cohort(cfg, encoder, cohort)
if history is not None:
    proj = enc_train.load_projector(cfg, latents.shape[2])
    with torch.no_grad():
        ct_emb = proj(torch.from_numpy(latents)).numpy()
    rows = []
    for key in ("cxr", "drr"):
        for name, idx in [("test fold", split["test"]), ("training folds", split["train"])]:
            r = enc_train.retrieval_accuracy(embeddings[key][idx], ct_emb[idx])
            rows.append({"query": key.upper(), "patients": name, "N": len(idx), **r})
    retrieval = pd.DataFrame(rows).set_index(["query", "patients"])
    display(save_table(retrieval, cfg, "03_retrieval", "X-ray → CT retrieval accuracy vs chance",
                       networks=encoder.describe()))  # fmt: skip

# %% [markdown]
# Retrieval well above chance on the test fold means the embedding carries patient-specific
# CT information that generalises; the gap to the training folds shows how much the small
# encoder memorises. The DRR, registered and clean, is the easier query.
#
# ## The embeddings in two dimensions

# %%
emb = embeddings["cxr"]
xy = PCA(n_components=2, random_state=cfg.seed).fit_transform(emb)
fig, ax = plt.subplots(figsize=(5, 4))
for lab, color, name in [(0, "tab:blue", "no PE"), (1, "tab:red", "PE")]:
    m = cohort.labels == lab
    ax.scatter(xy[m, 0], xy[m, 1], s=14, c=color, label=name, alpha=0.7)
ax.set_xlabel("PC 1")
ax.set_ylabel("PC 2")
ax.set_title("X-ray embeddings (PCA), all patients")
ax.legend()
save_figure(fig, cfg, "03_embedding_pca", networks=encoder.describe())
plt.show()

# %% [markdown]
# The encoder was never shown the PE label: whatever separation appears comes from the
# indirect signs that the X-ray shares with the CT.
#
# ## Summary
#
# - The X-ray becomes a 512-d unit vector, cached for every patient (X-ray and DRR).
# - The stand-in encoder is trained only from CXR–CT pairs, as BiomedCLIP is only from
#   image–text pairs; retrieval above chance shows it carries CT information.
#
# ## What's next
#
# Chapter 4 trains the latent diffusion model conditioned on these embeddings.
