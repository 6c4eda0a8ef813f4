# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10. What does each part of the objective do? Table 3 and Fig. 5
#
# ## Overview
#
# The paper's Table 3 trains the model with the L1 loss alone, then adds a perceptual
# (LPIPS), an adversarial and a classification term, and compares the full weighted
# combination; it also reports that pre-training on DRRs "highly boosted our performance
# across all metrics". This chapter asks the same questions of the book's model, on the
# simulated cohort.
#
# Training each variant from scratch is far beyond a CPU book. Every variant here
# **branches from one shared checkpoint**, the end of the unconditional stage of the
# generator (the shipped bundle's `stages/uncond`, or the live run's), and trains **the
# same number of steps**: a few DRR-conditioned steps then a few X-ray-conditioned steps
# with its loss; the variant without DRR pre-training spends all its steps on the X-rays.
# These are short fine-tunings, not the paper's training runs: the chapter measures how
# far apart they end, and with which uncertainty.
#
# **Objectives**
#
# 1. Train the variants of Table 3 from the shared checkpoint (same steps each).
# 2. Check first which metric columns separate a generator we expect to be worse (the
#    unconditional model at the branch point) from the full one, then read the table with
#    95 % bootstrap intervals over patients.
# 3. A Fréchet distance on features of a network trained in the book (the slice VAE's
#    encoder, trained on the training folds' CT slices), beside the random-network one.
# 4. Fig. 5 counterpart: one test patient under every variant.
# 5. Joint vs independent halves (beyond the paper): neighbour-slice gap, SSIM, time, and
#    memory and time at the paper's size.
#
# **Prerequisites**: chapter 1 (cohort) and chapter 8 (its latent PE classifier of the test
# fold is the classification term's network and reads the generated volumes). About 75 s in
# `workshop` on two cores (72 s measured, reference_s 2.1).
#
# In a fresh clone, `.venv/bin/xr2ct run-notebooks --only 10 --with-prerequisites`
# runs the chapters this one reads, then this one (in JupyterLab: once, in a terminal).

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0
weights = "shipped"

# %%
from IPython.display import Markdown, display

from xr2ct_lib import book
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval import ablation_readings as readings
from xr2ct_lib.eval import ablations as ev
from xr2ct_lib.generation.load import load_generator
from xr2ct_lib.run.networks import networks_for
from xr2ct_lib.train import ablations as ab
from xr2ct_lib.viz.ablations import variant_slices
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights)
ids, labels, real = ev.test_subset(cfg, PreparedCohort(cfg.run_dir))
pipe = load_generator(cfg)
branch = ab.branch_point(cfg)
NETS = networks_for(cfg).describe()
print(f"branch point: {branch.description}")

# %% [markdown]
# ## The variants, from one checkpoint
#
# The rows of the paper's Table 3 that the book can train, plus the full model without DRR
# pre-training. The loss weights are the paper's (λ = 0.01, 0.001, 0.08); the perceptual
# term uses the stand-in LPIPS network (chapter 6; the paper's leverages "the 2D
# ResNet-50-based RadImageNet architecture"), the classification term chapter 8's
# latent classifier of the test fold. Each run is cached under `runs/<profile>/ablations/`.

# %%
pipes, runs = ab.train_variants(cfg, ab.paper_variants(), branch, pipe)
display(save_table(runs, cfg, "10_variant_runs",
                   f"Ablation runs: every variant from the {branch.description}",
                   networks=NETS))  # fmt: skip

# %% [markdown]
# ## Generating the test patients under every variant
#
# Each variant generates the same patients with the same noise seeds (chapter 5's) and the
# profile's fast sampler. Two reference rows: the generator of the shipped bundle (all
# stages, the long schedule) and the unconditional model at the branch point, sampled
# without its X-ray, which we expect to do worse on every column (the separation table
# below tests that, column by column). A third control, the ground truth
# with Gaussian noise (σ = 0.2), shows what a column makes of a volume that is right in
# every structure but noisy.

# %%
branch_pipe = ab.branch_pipeline(pipe, branch)
rows, scores = ev.variant_sets(cfg, pipes, pipe, branch_pipe, ids, real)

# %% [markdown]
# ## Table 3 counterpart
#
# Every cell is the mean over the patients with its 95 % interval: a percentile bootstrap
# over patients (the same resamples for every row), or for the two Fréchet distances a
# leave-one-patient-out jackknife (a bootstrap resample repeats patients, which inflates a
# distance between distributions). With a handful of volumes the feature covariances are
# singular and a Fréchet distance is biased upwards: compare values within a column only.
# `FD-standin` is the Fréchet distance on a
# random 3D CNN (chapter 6); `FD-VAE-2.5D` the Fréchet distance on the features the slice
# VAE's encoder, trained in the book on the training folds' slices, gives every axial,
# coronal and sagittal slice, averaged over the three planes (in the manner of MAISI's
# RadImageNet 2.5D FID). Neither is FVD. `AUC (generated)` is chapter 8's test-fold latent
# classifier reading the generated latents; the `+ Classifier` and `Full` variants were
# trained to please that very network, which favours them in this column.

# %%
t = ev.variant_table(real, rows, pipe.vae, labels, scores, seed=cfg.seed)
display(save_table(t.shown(), cfg, "table3_ablations",
                   f"Table 3 counterpart: {len(ids)} test-fold patients, 95 % bootstrap "
                   f"intervals; variants branched from the {branch.description}",
                   networks=f"{NETS}; FD-standin: random 3D CNN; LPIPS-standin: random "
                   "AlexNet; FD-VAE-2.5D: the bundle's slice VAE encoder (trained in the "
                   "book); AUC: chapter 8's latent DenseNet of the test fold"))  # fmt: skip

# %% [markdown]
# ### Does each column see the unconditional model as worse?
#
# Before reading small differences: a column that cannot tell the unconditional model
# from the full one cannot rank the variants either.

# %%
sep = ev.separation(t, ev.GEN, [ev.UNCOND])
display(save_table(sep, cfg, "10_separation",
                   "Which columns separate the unconditional model from the generator "
                   "(worse, and outside the interval)", networks=NETS))  # fmt: skip

# %%
display(Markdown(readings.separation_reading(t, sep, list(pipes))))

# %% [markdown]
# ### The paper's Table 3 (quoted)

# %%
display(save_table(ev.paper_table3(), cfg, "table3_paper", "The paper's Table 3 (loss rows and "
                   "the full model), quoted", data="quoted from the paper (its private "
                   "cohort)", networks="the paper's (I3D FVD, LPIPS)", quoted=True))  # fmt: skip

# %% [markdown]
# ## Fig. 5 counterpart
#
# The same test patient (a PE patient when the subset has one) under every variant: middle
# axial, coronal and sagittal slices.

# %%
k = int(labels.argmax()) if labels.any() else 0
fig = variant_slices(real[k], {n: r["ct"][k] for n, r in rows.items() if n != ev.NOISY},
                     f"Patient {ids[k]} under every variant")  # fmt: skip
save_figure(fig, cfg, "fig5_ablation_slices", networks=NETS)

# %% [markdown]
# ## Joint vs independent halves (beyond the paper)
#
# The paper's model generates "only a maximum of 64 frames along the z-axis"; the book
# reads that as the two half volumes (even and odd slices) diffused as separate samples,
# and diffuses them jointly, as the two halves of one sample's channels. Independent
# halves know nothing of each other, so we expect stripes where the model is unsure: a jump
# between each even slice and the odd one after it, which raises chapter 5's neighbour-slice
# gap above the ground truth's (a blur lowers it). A fair comparison needs
# two models trained alike: the repository ships a pair, `weights/<profile>-halves-joint/`
# and `weights/<profile>-halves-independent/`, trained by the same command with the same
# VAE, encoder, cohort, seed and diffusion steps, differing only in `--halves` (their
# `provenance.json` holds the command). The shipped generator, trained longer, is the
# first row. Without the pair only the generator and the ground truth are measured.

# %%
halves = ev.halves_sets(cfg, rows, pipe, ids)
display(save_table(ev.halves_table(real, halves), cfg, "10_halves",
                   f"Halves: neighbour-slice gap, SSIM, seconds per volume ({len(ids)} "
                   "patients, this machine, CPU)", networks=f"{NETS}; the equal-schedule "
                   f"pair: {ev.halves_pair_networks(cfg, halves)}"))  # fmt: skip

# %%
display(Markdown(readings.halves_reading(halves, real)))

# %% [markdown]
# At the paper's size the layouts also differ in cost: a joint sample has twice the
# channels, an independent volume is two samples. The benchmark below ran one training
# step and one sampling step per layout, at the paper's U-Net and latent size, on a CPU
# (random weights: timings only), with the command in its `command` column.

# %%
bench, caption, command = ev.halves_benchmark()
display(save_table(bench, cfg, "10_halves_benchmark", caption, data="random latents "
                   "(benchmark)", networks="random-weight U-Net of the paper profile"))  # fmt: skip
display(Markdown(command))

# %% [markdown]
# ## Summary

# %%
display(Markdown(readings.summary(t, sep, len(pipes), cfg.profile.ablation_steps,
                                  branch.description, len(ids))))  # fmt: skip

# %% [markdown]
# ## What's next
#
# Chapter 11 takes the model to a cohort it was not trained on: non-contrast CT from
# another scanner, with DRRs as the X-rays, and adapts it with LoRA.
