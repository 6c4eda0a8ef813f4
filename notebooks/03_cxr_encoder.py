# ---
# jupyter:
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
# uses the frozen image encoder of BiomedCLIP {cite}`zhang2023biomedclip`, a CLIP model
# {cite}`radford2021clip` trained on 15 million biomedical image–caption pairs, and feeds
# the embedding to every ResNet block of the 3D U-Net. What matters for generation is that
# the embedding carries information about the patient's CT.
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
# **Prerequisites**: chapters 1 and 2 (cohort, latents). About 40 s in `workshop` (on one
# thread beside another notebook in `make book`, reference_s 2.3).
#
# In a fresh clone, `.venv/bin/xr2ct run-notebooks --only 03 --with-prerequisites`
# runs the chapters this one reads, then this one (in JupyterLab: once, in a terminal).

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from xr2ct_lib import book
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.latent_space import project_2d
from xr2ct_lib.eval.probe import load_probe_record, probe_reading, probe_record_table
from xr2ct_lib.eval.retrieval import retrieval_table
from xr2ct_lib.run.embeddings import embed_cohort
from xr2ct_lib.run.latents import load_latents
from xr2ct_lib.train import encoder as enc_train
from xr2ct_lib.viz import panels
from xr2ct_lib.viz.curves import training_curves
from xr2ct_lib.viz.embeddings import pe_scatter
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights="trained")
cohort = PreparedCohort(cfg.run_dir)
split = cohort.split(cfg.profile)
_, latents = load_latents(cfg, normalized=True)
print("latents", latents.shape)

# %% [markdown]
# ## What the encoder sees
#
# Each X-ray is normalised (0.5–99.5 percentile window) and resized to a square
# three-channel image: 224×224 for BiomedCLIP, smaller in the book's profiles.

# %%
show = cohort.split_ids(cfg.profile, "test")[:6]
titles = {p: f"{p} ({'PE' if cohort.labels[cohort.ids.index(p)] else 'no PE'})" for p in show}
fig = panels.encoder_inputs({p: cohort.load(p) for p in show}, titles, cfg.profile.cxr_size)
save_figure(fig, cfg, "03_encoder_inputs")
plt.show()

# %% [markdown]
# ## Training the encoder
#
# Without BiomedCLIP's weights, the book trains a small CNN so that the X-ray's embedding
# and a projection of the same patient's CT latent agree, and differ from other
# patients' (a symmetric InfoNCE loss {cite}`vandenoord2018cpc`, as CLIP). The first third
# of the steps uses the clean DRRs, the rest the degraded X-rays, mirroring the paper's
# DRR-then-CXR stages. Only the training folds are used.

# %%
encoder, history = enc_train.cxr_encoder_for(cfg, cohort, latents, split["train"])
print(encoder.describe())
if history is not None:
    fig = training_curves(history, {"drr_loss": "on DRRs", "cxr_loss": "on X-rays"},
                          "InfoNCE loss", "CXR encoder training")  # fmt: skip
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
embeddings = embed_cohort(cfg, encoder, cohort)
retrieval = None
if history is not None:
    retrieval = retrieval_table(cfg, embeddings, latents, split)
    display(save_table(retrieval, cfg, "03_retrieval", "X-ray → CT retrieval accuracy vs chance",
                       networks=encoder.describe()))  # fmt: skip

# %% [markdown]
# Retrieval above chance on the test fold would mean the embedding carries patient-specific
# CT information that generalises; the gap to the training folds shows how much the small
# encoder memorises, and the DRR, registered and clean, should be the easier query. In
# this run:

# %%
if retrieval is not None:
    r = retrieval.xs("test fold", level="patients")
    display(Markdown("; ".join(
        f"{q} queries find their own CT first in {row.top1:.0%} of the test fold "
        f"(chance {row.chance_top1:.0%}) and among the top 5 in {row.top5:.0%} "
        f"(chance {row.chance_top5:.0%})" for q, row in r.iterrows()
    ) + "."))  # fmt: skip

# %% [markdown]
# ## What the embedding carries: linear probes on fresh patients
#
# Whatever the embedding does not carry, the generated CTPA cannot show. A linear probe
# (a logistic regression, cross-validated) reads each finding a radiograph shows from the
# embeddings of fresh simulated patients. Two encoders are compared: the stand-in trained
# contrastively on the cohort's 80 training patients (as above, shipped in the bundle that
# `make weights` trained before the collection existed), and the **X-ray reader's trunk**:
# the pretrained X-ray reader of chapter 8 (thousands of simulated radiographs of patients
# outside the cohort, supervised by their records) used frozen, its pooled features and its
# finding probabilities as the embedding. BiomedCLIP is a foundation model that saw far more
# images than any cohort; the reader is the book's analogue of that, not of BiomedCLIP
# itself (it learnt from labels, not captions). The probes were recorded by
# `benchmarks/encoder_probe.py` and are read here, not recomputed.

# %%
probes = load_probe_record(cfg.profile.name)
if probes is not None:
    display(save_table(probe_record_table(probes), cfg, "03_encoder_probes",
                       "Linear-probe AUC of each finding from the encoders' embeddings of fresh "
                       "simulated patients' X-rays and DRRs",
                       networks="the shipped bundle's encoder (weights/<profile>/encoder); "
                       "the X-ray reader's trunk (weights/<profile>-cxr-reader)"))  # fmt: skip
    display(Markdown(probe_reading(probes)))
else:
    display(Markdown(f"No probe record for this profile: `python benchmarks/encoder_probe.py "
                     f"--profile {cfg.profile.name} --record`."))  # fmt: skip

# %% [markdown]
# ## The embeddings in two dimensions

# %%
xy = project_2d(embeddings["cxr"], cfg.seed, ("PCA",))["PCA"]
fig = pe_scatter(xy, cohort.labels, "X-ray embeddings (PCA), all patients")
save_figure(fig, cfg, "03_embedding_pca", networks=encoder.describe())
plt.show()

# %% [markdown]
# The encoder was never shown the PE label: any separation by label in this plot can only
# come from the indirect signs that the X-ray shares with the CT.
#
# ## Summary
#
# - The X-ray becomes a 512-d unit vector, cached for every patient (X-ray and DRR).
# - The stand-in encoder is trained only from CXR–CT pairs, as BiomedCLIP is only from
#   image–text pairs; the retrieval table measures how much CT information it carries.
#
# ## What's next
#
# Chapter 4 trains the latent diffusion model conditioned on these embeddings.
