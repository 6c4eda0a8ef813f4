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
# # 4. Training the X-ray2CTPA diffusion model
#
# ## Overview
#
# The generator is a latent diffusion model: a 3D U-Net learns to remove noise from the
# stacked slice latents of chapter 2, conditioned on the X-ray embedding of chapter 3,
# which reaches every ResNet block at every resolution. The paper trains in three stages:
# unconditional pre-training, then conditioning on clean DRRs of the same CT, then on the
# real X-rays, with the L1 loss on the predicted noise (plus perceptual, adversarial and
# classification terms, whose networks and switches live in `xr2ct_lib.train.losses`).
#
# **Objectives**
#
# 1. Build the denoiser and the cosine DDPM schedule (1000 steps) from the profile.
# 2. Run the three stages on the training folds of test fold 0, checkpointed and
#    resumable, and write the generation bundle that `xr2ct generate` reads.
# 3. Look at the loss curves, the size of each term of the paper's full objective, and
#    samples from the trained model.
#
# **Prerequisites**: chapters 1–3. About 4 minutes in `workshop`.
#
# ```{note}
# The paper trains for about 250 000 steps on a GPU. The `workshop` profile trains for a
# few hundred on a CPU (with a larger learning rate, see `xr2ct_lib.train.pipeline`),
# with the L1 term only, and the network predicts the clean latent x0 instead of the
# noise (`Profile.prediction_type`): a few hundred ε-prediction steps give samples that
# are still noise, while x0-prediction reaches a blurred average anatomy in the same
# time. Enough to see the method work end to end, not to reach the paper's quality. The
# `paper` profile runs the paper's schedule and ε-prediction.
# ```

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0
weights = "shipped"

# %%
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from safetensors.numpy import load_file

from xr2ct_lib.config import load_config
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.folds import fold_split
from xr2ct_lib.train import pipeline as pl
from xr2ct_lib.viz.provenance import save_figure, save_table

torch.set_num_threads(2)
cfg = load_config(profile, manifest, run_dir, seed, weights)
live = dataclasses.replace(cfg, weights="trained")  # this chapter trains its own networks
cohort = PreparedCohort(cfg.run_dir)
p = cfg.profile
print(cfg.describe())
print(
    f"latent {p.latent_shape}, U-Net channels {p.unet_channels}, steps per stage "
    f"{p.train_steps}, batch {p.batch_size}, predicts {p.prediction_type}, {p.halves} halves"
)
NETS = "X-ray2CTPA denoiser trained here; in-book stand-in VAE and CXR encoder"

# %% [markdown]
# ## Staged training
#
# Each half volume of each training patient is a sample. Stage 1 drops the condition
# (unconditional), stage 2 conditions on the DRR embedding, stage 3 on the X-ray
# embedding; in stages 2 and 3 the condition is still dropped 10 % of the time so that
# classifier-free guidance can be tried. Checkpoints (weights, EMA, optimiser, scheduler,
# step, RNG state) are written atomically; a killed run resumes where it stopped, and a
# finished run with the same recipe is reused.

# %%
model, history = pl.train_xray2ctpa(live, test_fold=0)
n_params = sum(q.numel() for q in model.parameters())
print(f"{n_params / 1e6:.2f} M parameters; bundle in {cfg.run_dir / 'models' / 'bundle'}")

# %%
fig, ax = plt.subplots(figsize=(7, 3))
offset = 0
for stage, g in history.groupby("stage", sort=False):
    steps = np.arange(len(g)) + offset
    (smooth,) = ax.plot(steps, g["l1"].rolling(10, min_periods=1).mean(), lw=1.5,
                        label=f"stage {stage} (mean of 10)")  # fmt: skip
    ax.plot(steps, g["l1"], lw=0.6, alpha=0.4, color=smooth.get_color())
    offset += len(g)
ax.set_xlabel("step (all stages)")
ax.set_ylabel(f"L1 loss ({p.prediction_type} target)")
ax.set_title("Staged training: unconditional → DRR → X-ray")
ax.legend()
save_figure(fig, cfg, "04_loss_curves", networks=NETS)
plt.show()

# %% [markdown]
# ## The paper's full objective
#
# The paper adds three terms to the L1 noise loss, each on the predicted clean latent
# x̂0: LPIPS between VAE-decoded slices of x̂0 and of the true latent (λ1 = 0.01), a
# patch-GAN adversarial term on the same slices with MONAI's `PatchDiscriminator`
# (λ2 = 0.001), and the latent DenseNet's PE classification loss (λ3 = 0.08). The in-book
# runs switch them off to fit the CPU budget; here every term is computed once, on one
# training batch through the trained model, to show the size of each contribution. The
# discriminator and the DenseNet are untrained here (the paper pre-trains the classifier;
# chapter 8 trains ours), and LPIPS is the stand-in network of chapter 2 unless real
# LPIPS weights are found.

# %%
from xr2ct_lib.eval import standins
from xr2ct_lib.models.classifiers import LatentPEClassifier
from xr2ct_lib.models.vae import load_vae
from xr2ct_lib.train import autoencoder as ae
from xr2ct_lib.train import losses

vae = load_vae(cfg.run_dir / "models" / "vae")
lpips = standins.lpips_net()
torch.manual_seed(cfg.seed)  # the untrained networks below: same seed, same table
terms = losses.LossTerms(
    losses.LossConfig.full(),
    decode_slices=losses.make_decode_slices(vae.decode_slices, ae.load_normalizer(live)),
    perceptual=losses.slice_perceptual(lpips, resize_to=64),
    discriminator=losses.make_discriminator(),
    classifier=LatentPEClassifier.for_profile(p),
    halves=p.halves,
)
train_data = pl.training_data(live, fold_split(cohort.folds, 0)["train"])
batch = train_data.batch(list(range(p.batch_size)))
with torch.no_grad():
    out = model.training_loss(batch["latent"], batch["cxr"], batch["label"], terms,
                              torch.Generator().manual_seed(cfg.seed))  # fmt: skip
weights = {"l1": 1.0, **losses.LossConfig.full().weights()}
objective = pd.DataFrame(
    {"value": {k: float(out[k]) for k in weights}, "weight λ": weights}
).assign(**{"weighted": lambda d: d["value"] * d["weight λ"]})
objective = objective.map(lambda v: f"{v:.3g}")  # terms differ by orders of magnitude
display(save_table(objective, cfg, "04_loss_terms",
                   f"Terms of the paper's objective on one training batch "
                   f"(total {float(out['total']):.3f})",
                   networks=f"{NETS}; perceptual: {lpips.describe()}; untrained "
                            "PatchDiscriminator and latent DenseNet"))  # fmt: skip

# %% [markdown]
# ## Samples from the trained model
#
# A few training-fold patients, middle axial slice: the ground truth beside a volume
# generated from the patient's X-ray with the fast sampler (DDIM).

# %%
train_ids = [cohort.ids[i] for i in fold_split(cohort.folds, 0)["train"][:3]]
pl.generate_patients(live, model, train_ids, out_dir="samples_train")
fig, axes = plt.subplots(2, len(train_ids), figsize=(2.6 * len(train_ids), 5.4), squeeze=False)
for k, pid in enumerate(train_ids):
    gt = cohort.load(pid)["ct"]
    gen = load_file(str(cfg.run_dir / "samples_train" / f"{pid}.safetensors"))["ct"]
    for r, (v, name) in enumerate([(gt, "ground truth"), (gen, "generated")]):
        axes[r, k].imshow(v[v.shape[0] // 2], cmap="gray", vmin=-1, vmax=1)
        axes[r, k].set_axis_off()
        axes[r, k].set_title(f"{pid} {name}", fontsize=8)
fig.tight_layout()
save_figure(fig, cfg, "04_training_samples", networks=NETS)
plt.show()

# %% [markdown]
# ## Summary
#
# - The three stages run in sequence from the cached latents and embeddings; each has
#   its own checkpoints, and the last writes the bundle used by `xr2ct generate`.
# - The loss falls within each stage; the step to the X-ray stage shows the harder,
#   unregistered condition.
#
# ## What's next
#
# Chapter 5 generates the test fold's volumes from their X-rays and compares them with
# the real CTs.
