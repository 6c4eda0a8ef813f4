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
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from xr2ct_lib import book
from xr2ct_lib.config import REPO_ROOT
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval import ablations as ev
from xr2ct_lib.generation.load import load_generator
from xr2ct_lib.run.networks import networks_for
from xr2ct_lib.train import ablations as ab
from xr2ct_lib.viz.ablations import variant_slices
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights)
p = cfg.profile
cohort = PreparedCohort(cfg.run_dir)
test = cohort.split_ids(p, "test")
ids = ev.balanced_subset(test, [cohort.labels[cohort.ids.index(i)] for i in test],
                         p.ablation_patients)  # fmt: skip
labels = np.array([cohort.labels[cohort.ids.index(i)] for i in ids])
real = np.stack([cohort.load(i)["ct"] for i in ids])
pipe = load_generator(cfg)
branch = ab.branch_point(cfg)
NETS = networks_for(cfg).describe()
print(f"{len(ids)} of {len(test)} test-fold patients ({labels.sum()} with PE)")
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
rows = {name: ev.generate_set(cfg, q, ids) for name, q in pipes.items()}
GEN = "Generator (all stages)"
rows[GEN] = ev.generator_set(cfg, pipe, ids)  # chapter 5's volumes when it made them
UNCOND = "Unconditional (branch point)"
rows[UNCOND] = ev.generate_set(cfg, ab.branch_pipeline(pipe, branch), ids, conditional=False)
scores = {name: ev.generated_pe_scores(cfg, r["z"], ids) for name, r in rows.items()}
NOISY = "Ground truth + noise (σ 0.2)"
rows[NOISY] = ev.noisy_truth(real, 0.2, cfg.seed)

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
table3 = t.shown()
display(save_table(table3, cfg, "table3_ablations",
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
sep = ev.separation(t, GEN, [UNCOND])
display(save_table(sep, cfg, "10_separation",
                   "Which columns separate the unconditional model from the generator "
                   "(worse, and outside the interval)", networks=NETS))  # fmt: skip

# %%
ok = [m for m in sep.columns if sep.iloc[0][m] == "separates"]
vals = t.values
best = {m: (vals.loc[list(pipes), m].idxmin() if ev.LOWER_IS_BETTER[m]
            else vals.loc[list(pipes), m].idxmax()) for m in vals.columns}  # fmt: skip
better = [m for m in vals.columns if np.isfinite(vals.loc[UNCOND, m]) and (
    vals.loc[UNCOND, m] < vals.loc[GEN, m] if ev.LOWER_IS_BETTER[m]
    else vals.loc[UNCOND, m] > vals.loc[GEN, m])]  # fmt: skip
within = [m for m in ok if all(
    t.lo.loc[v, m] <= vals.loc[best[m], m] <= t.hi.loc[v, m] for v in pipes)]  # fmt: skip
display(Markdown(
    f"Columns that separate the unconditional model from the generator here: "
    f"{', '.join(ok) or 'none'}. "
    + (f"Against our expectation the unconditional model scores better than the generator "
       f"on {', '.join(better)}. " if better else "")
    + "Among the variants, the best value of "
    + "; ".join(f"{m} is {best[m]}'s" for m in ok)
    + (f". For {', '.join(within)} that best value lies inside every variant's interval: "
       "with these steps and patients the variants are not told apart." if within else ".")
))  # fmt: skip

# %% [markdown]
# ### The paper's Table 3 (quoted)

# %%
paper = pd.DataFrame(
    {"FVD ↓ (×10³)": ["2.14 ± 0.8", "1.89 ± 0.64", "2.06 ± 0.63", "1.94 ± 0.63", "2.64 ± 1.75",
                      "0.29 ± 0.22"],
     "PSNR ↑": ["11.61 ± 0.91", "14.78 ± 0.60", "11.53 ± 0.78", "14.38 ± 0.77", "12.03 ± 0.82",
                "19.41 ± 0.96"],
     "SSIM ↑": ["0.2 ± 0.06", "0.22 ± 0.07", "0.2 ± 0.058", "0.21 ± 0.06", "0.2 ± 0.05",
                "0.58 ± 0.08"],
     "LPIPS ↓": ["0.48 ± 0.07", "0.34 ± 0.06", "0.45 ± 0.052", "0.36 ± 0.048", "0.50 ± 0.06",
                 "0.14 ± 0.04"]},
    index=["L1", "L1 + LPIPS", "L1 + ADV", "L1 + LPIPS + ADV", "L1 + Classifier",
           "X-ray2CTPA"],
)  # fmt: skip
display(save_table(paper, cfg, "table3_paper", "The paper's Table 3 (loss rows and the full "
                   "model), quoted", data="quoted from the paper (its private cohort)",
                   networks="the paper's (I3D FVD, LPIPS)", quoted=True))  # fmt: skip

# %% [markdown]
# ## Fig. 5 counterpart
#
# The same test patient (a PE patient when the subset has one) under every variant: middle
# axial, coronal and sagittal slices.

# %%
k = int(np.argmax(labels)) if labels.any() else 0
fig = variant_slices(real[k], {n: r["ct"][k] for n, r in rows.items() if n != NOISY},
                     f"Patient {ids[k]} under every variant")  # fmt: skip
save_figure(fig, cfg, "fig5_ablation_slices", networks=NETS)
plt.show()

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
# chapter 5's volumes carry no time: the L1 variant has the same network, sampler and steps
same_cost = rows["L1"]["seconds"]
label = f"{pipe.profile.halves} halves, the generator ({ev.schedule_text(pipe)})"
halves_rows = {label: {**rows[GEN], "seconds": same_cost}}
pair = ev.halves_bundles(cfg)
names = {}
for h, q in pair.items():
    names[h] = f"{h} halves, weights/{p.name}-halves-{h} ({ev.schedule_text(q)})"
    halves_rows[names[h]] = ev.generate_set(cfg, q, ids)
if len(pair) < 2:
    print(f"the equal-schedule pair weights/{p.name}-halves-* is not there: the generator only")
pair_nets = ", ".join(f"weights/{p.name}-halves-{h}" for h in pair) or "none"
display(save_table(ev.halves_table(real, halves_rows), cfg, "10_halves",
                   f"Halves: neighbour-slice gap, SSIM, seconds per volume ({len(ids)} "
                   "patients, this machine, CPU)",
                   networks=f"{NETS}; the equal-schedule pair: {pair_nets}"))  # fmt: skip

# %%
if len(pair) == 2:
    gap = {h: ev.gap_ratio(halves_rows[names[h]]["ct"], real) for h in pair}
    display(Markdown(
        "Trained alike, the jointly diffused halves have a neighbour-slice gap "
        f"{gap['joint']:.2f}× the ground truth's and the independent halves "
        f"{gap['independent']:.2f}×: "
        + ("here the independent halves do not jump more than the joint ones."
           if gap["independent"] <= gap["joint"] else
           "the independent halves jump more from slice to slice, beyond the real CT's jumps: "
           "stripes." if gap["independent"] > 1 else
           "the independent halves jump more from slice to slice than the joint ones, but "
           "both stay below the ground truth's gap: smoother than the CT, not striped.")
    ))  # fmt: skip

# %% [markdown]
# At the paper's size the layouts also differ in cost: a joint sample has twice the
# channels, an independent volume is two samples. The benchmark below ran one training
# step and one sampling step per layout, at the paper's U-Net and latent size, on a CPU
# (random weights: timings only), with the command in its `command` column.

# %%
bench = REPO_ROOT / "benchmarks" / "results" / "diffusion_bench_paper_cpu.csv"
if bench.is_file():
    b = pd.read_csv(bench).set_index("halves")
    shown = ["sample_shape", "samples_per_volume", "denoiser_params_M", "batch",
             "train_s_per_step", "peak_memory_GiB", "ddim_1_s_per_volume",
             "ddpm_1000_s_per_volume"]  # fmt: skip
    display(save_table(b[shown], cfg, "10_halves_benchmark", "Paper size, one step per layout "
                       f"({b['machine'].iloc[0]}, {b['torch_threads'].iloc[0]} thread; DDPM-1000 "
                       "extrapolated from one step)", data="random latents (benchmark)",
                       networks="random-weight U-Net of the paper profile"))  # fmt: skip
    display(Markdown(f"Command: `{b['command'].iloc[0]}`; {b['note'].iloc[0]}."))
else:
    print(f"{bench.relative_to(REPO_ROOT)} is missing: run the benchmark (see its docstring)")

# %% [markdown]
# ## Summary

# %%
full, l1 = "Full", "L1"
m = "SSIM"
display(Markdown(
    f"- {len(pipes)} variants trained {sum(p.ablation_steps)} steps each from the "
    f"{branch.description}, and generated {len(ids)} test patients.\n"
    f"- SSIM: Full {vals.loc[full, m]:.3f} [{t.lo.loc[full, m]:.3f}, {t.hi.loc[full, m]:.3f}],"
    f" L1 only {vals.loc[l1, m]:.3f} [{t.lo.loc[l1, m]:.3f}, {t.hi.loc[l1, m]:.3f}], the "
    f"unconditional model {vals.loc[UNCOND, m]:.3f}.\n"
    f"- Columns that see the unconditional model as worse: {', '.join(ok) or 'none'}.\n"
    "- These are short fine-tunings of one simulated cohort's model; the paper's rows come "
    "from full training runs on its private cohort and only the book's rows compare with each "
    "other."
))  # fmt: skip

# %% [markdown]
# ## What's next
#
# Chapter 11 takes the model to a cohort it was not trained on: non-contrast CT from
# another scanner, with DRRs as the X-rays, and adapts it with LoRA.
