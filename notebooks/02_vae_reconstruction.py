# ---
# jupyter:
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
# with a frozen 2D VAE, in the paper's words "fine-tuned from the original KL-f8
# autoencoder" (e.g. Stable Diffusion's `sd-vae-ft-mse`) {cite}`rombach2022ldm`,
# and the slice latents are stacked into a 3D latent: 4×64×32×32 for a 64×256×256 half.
# The paper compares this with a 3D VQGAN that compresses the whole volume
# {cite}`khader2023medicaldiffusion`, both used off the shelf, and finds the 2D VAE
# reconstructs its test set better (its Table 4: PSNR 31.00 ± 2.5 vs 26.35 ± 2.8 dB,
# SSIM 0.84 ± 0.09 vs 0.74 ± 0.08).
#
# **Objectives**
#
# 1. Train (or, in the `paper` profile, load) the slice-wise 2D VAE.
# 2. Train a 3D compressor of the same latent size for comparison.
# 3. Reproduce the Table 4 comparison on the test fold and the Fig. 6 slices.
# 4. Encode every patient into the latents that the diffusion model will learn.
#
# **Prerequisites**: chapter 1 (the prepared cohort). About 2 minutes in `workshop`
# (107 s measured on two cores, reference_s 2.1).
#
# In a fresh clone, `.venv/bin/xr2ct run-notebooks --only 02 --with-prerequisites`
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
from xr2ct_lib.eval.reconstruction import compressor_table
from xr2ct_lib.run.latents import encode_cohort
from xr2ct_lib.train import autoencoder as ae
from xr2ct_lib.viz import panels
from xr2ct_lib.viz.curves import training_curves
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights="trained")
cohort = PreparedCohort(cfg.run_dir)
split = cohort.split(cfg.profile)
test_ids = cohort.split_ids(cfg.profile, "test")
print(
    {k: len(v) for k, v in split.items()}, "patients; latent of a half:", cfg.profile.latent_shape
)
half = "×".join(map(str, cfg.profile.half_size))
print(f"a {half} half has {cfg.profile.latent_compression:g}× more values than its latent")

# %% [markdown]
# ## The slice-wise 2D VAE
#
# In the `paper` profile the real SD VAE is loaded from local files (it cannot be
# downloaded here). In `smoke` and `workshop` a small diffusers `AutoencoderKL` with the
# same structure (KL regularised, 4 latent channels, downsampling H and W only) is trained
# inside the book on the axial slices of the **training folds**, with an L1
# reconstruction loss and a small KL term, and random left-right flips.

# %%
vae, vae_history = ae.slice_vae_for(cfg, cohort, split["train"])
print(vae.describe())
if vae_history is not None:
    fig = training_curves(vae_history, {"l1": "L1 (slices in [−1, 1])"}, "L1", "2D VAE training",
                          logy=True)  # fmt: skip
    save_figure(fig, cfg, "02_vae_training", networks=vae.describe())
    plt.show()

# %% [markdown]
# ## The 3D compressor
#
# The paper's comparison model is a 3D VQGAN. The book's counterpart is MONAI's 3D
# `VQVAE` {cite}`vandenoord2017vqvae`: the whole volume, downsampled by 4 along every axis,
# with a latent of as many values as the two 2D-VAE halves together. It is trained the
# same way on the same patients (L1 plus the codebook loss, no adversarial term).

# %%
comp3d, comp_history = ae.train_compressor3d(cfg, cohort, split["train"])
print(comp3d.describe())

# %% [markdown]
# ## Table 4: reconstruction quality on the test fold
#
# Every test-fold CT goes through each compressor and back. The 2D VAE sees the two
# halves slice by slice and the halves are re-interleaved. FVD {cite}`unterthiner2019fvd`
# and LPIPS {cite}`zhang2018lpips` need pretrained I3D and AlexNet weights; when these are
# absent the table uses fixed random networks and says so in the column names
# (`FD-standin`, `LPIPS-standin`): those columns compare the two rows, they are not the
# paper's metrics. SSIM is the 3D SSIM of {cite}`wang2004ssim`.

# %%
gt = cohort.stack("ct", split["test"])  # (N, D, H, W) in [−1, 1]
table4 = compressor_table(gt, {"2D VAE (slice-wise)": vae, "3D VQ-VAE": comp3d})
display(save_table(table4.table, cfg, "table4_compressors",
                   f"Table 4 counterpart: reconstruction of {len(test_ids)} test-fold CTs "
                   "(mean ± std over patients)",
                   networks=f"{vae.describe()}; {comp3d.describe()}; "
                            f"{table4.networks}"))  # fmt: skip

# %% [markdown]
# The paper expects the slice-wise 2D VAE to reconstruct better: it keeps the full
# in-plane resolution of every slice, while a 3D model must also compress along z. What
# this run found:

# %%
psnr, ssim = table4.mean("PSNR"), table4.mean("SSIM")
best = max(psnr, key=psnr.get)
display(Markdown(
    f"In this run the **{best}** reconstructs the test fold better by PSNR ("
    + ", ".join(f"{k}: {v:.2f} dB" for k, v in psnr.items()) + "), and by SSIM the "
    + f"**{max(ssim, key=ssim.get)}** is ahead ("
    + ", ".join(f"{k}: {v:.3f}" for k, v in ssim.items()) + ")."
))  # fmt: skip

# %% [markdown]
# ## Fig. 6: consecutive slices, ground truth above reconstruction
#
# The test patient with the largest clot, four consecutive slices through the middle of
# each plane: do the transitions between slices stay continuous after the slice-wise
# compression?

# %%
pid = max(test_ids, key=lambda p: cohort.load(p)["clot"].sum())
vol = cohort.load(pid)["ct"]
fig = panels.consecutive_slices(vol, vae.reconstruct(vol).numpy(), "2D VAE",
                                f"{pid}: consecutive slices, ground truth above the VAE "
                                "reconstruction")  # fmt: skip
save_figure(fig, cfg, "02_fig6_reconstruction", networks=vae.describe())
plt.show()

# %% [markdown]
# ## What the latent looks like
#
# The latent of a half volume has 4 channels, each a small image per slice. Below, the
# middle slice of each channel for the patient above: the channels keep the anatomy's
# layout at 1/4 (workshop) or 1/8 (paper) of the resolution.

# %%
fig = panels.latent_channels(vol, vae.encode_volume(vol[0::2]).cpu().numpy())
save_figure(fig, cfg, "02_latent_channels", networks=vae.describe(),
            caption=f"{pid}: the middle slice of each latent channel beside the CT")  # fmt: skip
plt.show()

# %% [markdown]
# ## Encoding the cohort
#
# Every patient's two halves are encoded once and cached in `runs/<profile>/latents/`.
# For the diffusion model the latents are min–max scaled to [−1, 1] with constants taken
# from the training folds only, as the reference implementation does.

# %%
norm = encode_cohort(cfg, vae, cohort)
print(f"latent range on the training folds: {norm.min:.3f} … {norm.max:.3f}")

# %% [markdown]
# ## Summary
#
# - The slice-wise 2D VAE compresses each half volume by the factor printed at the top:
#   the half's voxels over its latent's values, 4× in `smoke` and `workshop` (H and W
#   downsampled by 4, into 4
#   channels) and 16× at the paper's size (64×256×256 → 4×64×32×32). Counted in the SD
#   VAE's three RGB input channels (a grey slice repeated) it would be 3× that, but the
#   repeats carry nothing.
# - The Table 4 counterpart above compares it with a 3D compressor of the same latent size
#   on this run's test fold; the paper's reason to diffuse in the 2D VAE's latent space is
#   that it reconstructs better.
# - All latents are cached for the next chapters.
#
# ## What's next
#
# Chapter 3 builds the other input of the diffusion model: the embedding of the X-ray.
