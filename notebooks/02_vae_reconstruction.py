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
# # 2. The latent space: a slice-wise 2D VAE against a 3D compressor
#
# ## Overview
#
# X-ray2CTPA does not diffuse voxels. Each half volume is compressed **slice by slice**
# with a frozen 2D VAE (Stable Diffusion's KL-f8 `sd-vae-ft-mse`), and the slice latents
# are stacked into a 3D latent: 4×64×32×32 for a 64×256×256 half. The paper compares
# this with a 3D VQGAN that compresses the whole volume (its Table 4) and finds the 2D VAE
# reconstructs better (PSNR 35.6 vs 28.7 dB).
#
# **Objectives**
#
# 1. Train (or, in the `paper` profile, load) the slice-wise 2D VAE.
# 2. Train a 3D compressor of the same latent size for comparison.
# 3. Reproduce the Table 4 comparison on the test fold and the Fig. 6 slices.
# 4. Encode every patient into the latents that the diffusion model will learn.
#
# **Prerequisites**: chapter 1 (the prepared cohort). About 2.5 minutes in `workshop`.

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

from xr2ct_lib.config import load_config
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval import metrics as M
from xr2ct_lib.eval import standins
from xr2ct_lib.eval.folds import fold_split
from xr2ct_lib.models.vae import load_sd_vae
from xr2ct_lib.train import autoencoder as ae
from xr2ct_lib.viz.provenance import save_figure, save_table
from xr2ct_lib.viz.volumes import plane_slice

torch.set_num_threads(2)
cfg = load_config(profile, manifest, run_dir, seed)
cohort = PreparedCohort(cfg.run_dir)
split = fold_split(cohort.folds, test_fold=0)
print(cfg.describe())
print(
    {k: len(v) for k, v in split.items()}, "patients; latent of a half:", cfg.profile.latent_shape
)

# %% [markdown]
# ## The slice-wise 2D VAE
#
# In the `paper` profile the real SD VAE is loaded from local files (it cannot be
# downloaded here). In `smoke` and `workshop` a small diffusers `AutoencoderKL` with the
# same structure (KL regularised, 4 latent channels, downsampling H and W only) is trained
# inside the book on the axial slices of the **training folds**, with an L1
# reconstruction loss and a small KL term, and random left-right flips.

# %%
if cfg.profile.vae_steps == 0:
    vae, vae_history = load_sd_vae(), None
else:
    vae, vae_history = ae.train_slice_vae(cfg, cohort, split["train"])
print(vae.describe())
if vae_history is not None:
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.plot(vae_history["step"], vae_history["l1"], lw=0.8, label="L1 (slices in [−1, 1])")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("L1")
    ax.set_title("2D VAE training")
    ax.legend()
    save_figure(fig, cfg, "02_vae_training", networks=vae.describe())
    plt.show()

# %% [markdown]
# ## The 3D compressor
#
# The paper's comparison model is a 3D VQGAN. The book's counterpart is MONAI's 3D
# `VQVAE`: the whole volume, downsampled by 4 along every axis, with a latent of as many
# values as the two 2D-VAE halves together. It is trained the same way on the same
# patients (L1 plus the codebook loss, no adversarial term).

# %%
comp3d, comp_history = ae.train_compressor3d(cfg, cohort, split["train"])
print(comp3d.describe())

# %% [markdown]
# ## Table 4: reconstruction quality on the test fold
#
# Every test-fold CT goes through each compressor and back. The 2D VAE sees the two
# halves slice by slice and the halves are re-interleaved. FVD and LPIPS need pretrained
# I3D and AlexNet weights; when these are absent the table uses fixed random networks
# and says so in the column names (`FD-standin`, `LPIPS-standin`): those columns compare
# the two rows, they are not the paper's metrics.

# %%
test_ids = [cohort.ids[i] for i in split["test"]]
gt = np.stack([cohort.load(p)["ct"] for p in test_ids])  # (N, D, H, W)
rec_2d = np.stack([ae.reconstruct(vae, v) for v in gt])
rec_3d = np.stack([comp3d.reconstruct(v).numpy() for v in gt])
fnet, lnet = standins.fvd_net(), standins.lpips_net()
lp_kw = {"resize_to": 64, "max_slices_per_plane": 8}
rows = [
    M.quality_table(
        rec[:, None], gt[:, None], fvd_net=fnet, lpips_net=lnet, label=name, lpips_kwargs=lp_kw
    )
    for name, rec in [("2D VAE (slice-wise)", rec_2d), ("3D VQ-VAE", rec_3d)]
]
table4 = pd.concat(rows)
nets = "; ".join(f"{k}: {v}" for k, v in rows[0].attrs["feature_nets"].items() if "none" not in v)
display(save_table(table4, cfg, "table4_compressors",
                   f"Table 4 counterpart: reconstruction of {len(test_ids)} test-fold CTs "
                   "(mean ± std over patients)",
                   networks=f"{vae.describe()}; {comp3d.describe()}; {nets}"))  # fmt: skip

# %% [markdown]
# The slice-wise 2D VAE should reconstruct better than the 3D compressor, as in the paper:
# it keeps the full in-plane resolution per slice, while the 3D model must also compress
# along z.
#
# ## Fig. 6: consecutive slices, ground truth above reconstruction

# %%
pid_i = int(np.argmax([cohort.load(p)["clot"].sum() for p in test_ids]))
vol, rec = gt[pid_i], rec_2d[pid_i]
fig, axes = plt.subplots(6, 4, figsize=(7.5, 11))
for r, plane in enumerate(("axial", "coronal", "sagittal")):
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[plane]
    mid = vol.shape[axis] // 2
    for c, k in enumerate(range(mid - 2, mid + 2)):
        for rr, (v, name) in enumerate([(vol, "ground truth"), (rec, "2D VAE")]):
            ax = axes[2 * r + rr, c]
            ax.imshow(plane_slice(v, plane, k), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{plane}\n{name}", fontsize=8)
            if rr == 0:
                ax.set_title(f"slice {k}", fontsize=8)
fig.suptitle(f"{test_ids[pid_i]}: consecutive slices, ground truth above the VAE reconstruction")
fig.tight_layout()
save_figure(fig, cfg, "02_fig6_reconstruction", networks=vae.describe())
plt.show()

# %% [markdown]
# ## What the latent looks like
#
# The latent of a half volume has 4 channels, each a small image per slice. Below, the
# middle slice of each channel for the patient above: the channels keep the anatomy's
# layout at 1/4 (workshop) or 1/8 (paper) of the resolution.

# %%
z = vae.encode_volume(cohort.load(test_ids[pid_i])["ct"][0::2]).cpu().numpy()
fig, axes = plt.subplots(1, z.shape[0] + 1, figsize=(2.2 * (z.shape[0] + 1), 2.4))
axes[0].imshow(vol[vol.shape[0] // 2], cmap="gray", vmin=-1, vmax=1)
axes[0].set_title("CT slice", fontsize=8)
for c in range(z.shape[0]):
    axes[c + 1].imshow(z[c, z.shape[1] // 2], cmap="magma")
    axes[c + 1].set_title(f"latent channel {c}", fontsize=8)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
save_figure(fig, cfg, "02_latent_channels", networks=vae.describe())
plt.show()

# %% [markdown]
# ## Encoding the cohort
#
# Every patient's two halves are encoded once and cached in `runs/<profile>/latents/`.
# For the diffusion model the latents are min–max scaled to [−1, 1] with constants taken
# from the training folds only, as the reference implementation does.

# %%
norm = ae.encode_cohort(cfg, vae, cohort)
print(f"latent range on the training folds: {norm['min']:.3f} … {norm['max']:.3f}")

# %% [markdown]
# ## Summary
#
# - The slice-wise 2D VAE compresses each half volume by 16× (workshop) or 48× (paper).
# - Against a 3D compressor of the same latent size it reconstructs the CT better
#   (Table 4 counterpart above), the paper's reason to diffuse in its latent space.
# - All latents are cached for the next chapters.
#
# ## What's next
#
# Chapter 3 builds the other input of the diffusion model: the embedding of the X-ray.
