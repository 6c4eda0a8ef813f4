# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. How close are the generated volumes? Table 2
#
# ## Overview
#
# The paper measures its generated test volumes against the real ones with FVD (×10³)
# {cite}`unterthiner2019fvd`, PSNR, SSIM {cite}`wang2004ssim` and LPIPS
# {cite}`zhang2018lpips`; its Table 2 reports FVD 0.29 ± 0.22 (×10³), PSNR 19.41 ± 0.96,
# SSIM 0.58 ± 0.08 and LPIPS 0.14 ± 0.04, sampling with DDPM's 1000 steps
# {cite}`ho2020ddpm`. This chapter reproduces the table for the book's model and compares
# DDPM with the fast samplers DDIM {cite}`song2021ddim` and DPM-Solver++
# {cite}`lu2022dpmsolverpp`, in quality and in time per volume.
#
# **Objectives**
#
# 1. Table 2 counterpart on the test fold (mean ± std over patients).
# 2. DDPM vs DDIM and DPM-Solver++ on one patient: quality and seconds per volume.
#
# **Prerequisites**: chapter 5. About 40 s in `workshop` on two cores (DDPM is
# slow on a CPU: the workshop profile strides it).
#
# In a fresh clone, `.venv/bin/xr2ct run-notebooks --only 06 --with-prerequisites`
# runs the chapters this one reads, then this one (in JupyterLab: once, in a terminal).

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0
weights = "shipped"  # which VAE/encoder/generator: weights/<profile>/ or this run's own

# %%
from IPython.display import Markdown, display

from xr2ct_lib import book
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.generated import test_fold_volumes
from xr2ct_lib.eval.metrics import compare_quality
from xr2ct_lib.eval.samplers import compare_samplers, ddpm_seconds
from xr2ct_lib.generation.load import load_generator
from xr2ct_lib.run.networks import networks_for
from xr2ct_lib.viz.provenance import save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights)
cohort = PreparedCohort(cfg.run_dir)
test_ids, real, fake = test_fold_volumes(cfg, cohort)
NETS = networks_for(cfg).describe()
print(f"{len(test_ids)} test volumes")

# %% [markdown]
# ## Table 2
#
# Without the pretrained I3D and AlexNet-LPIPS weights, the FVD and LPIPS columns use
# fixed random networks and are named `FD-standin` and `LPIPS-standin`: comparable
# between rows of this book, not with the paper's numbers.

# %%
table2 = compare_quality({"X-ray2CTPA (DDIM)": (fake, real)})
display(save_table(table2.table, cfg, "table2_generation_quality",
                   f"Table 2 counterpart: generated vs real CTPA, {len(test_ids)} test patients",
                   networks=f"{NETS}; {table2.networks}"))  # fmt: skip

# %% [markdown]
# ## DDPM vs the fast samplers
#
# The paper samples with all 1000 DDPM steps. DDIM reuses the same trained model with
# far fewer steps, and DPM-Solver++ fewer still for the same quality. On a CPU all 1000
# DDPM steps are slow, so the comparison runs on one test patient and DDPM
# is strided to the profile's `ddpm_steps` (200 in `workshop`, 50 in `smoke`, all 1000 in
# `paper`); the table says how many, and the line under it what 1000 steps would take.

# %%
model = load_generator(cfg)  # the shipped bundle, or chapter 4's live run
samplers = compare_samplers(cfg, model, test_ids[0], real[0, 0])
display(save_table(samplers, cfg, "06_samplers",
                   f"Samplers on test patient {test_ids[0]} (time per volume on this machine, "
                   "CPU)", networks=NETS))  # fmt: skip

# %%
ddpm, fast = samplers.iloc[-1], samplers.iloc[0]
display(Markdown(
    f"On this machine {samplers.index[0]} took {fast['s / volume']:.1f} s per volume and "
    f"{samplers.index[-1]} {ddpm['s / volume']:.1f} s "
    f"({ddpm['s / volume'] / fast['s / volume']:.1f}× as long), at a PSNR of {fast.PSNR:.2f} dB "
    f"against {ddpm.PSNR:.2f} dB and an SSIM of {fast.SSIM:.3f} against {ddpm.SSIM:.3f} "
    "(one patient: a hint, not a test). At the same time per step, DDPM's 1000 steps "
    f"would take about {ddpm_seconds(samplers):.0f} s per volume here."
))  # fmt: skip

# %% [markdown]
# ## Summary
#
# - The table reports the paper's four metrics on the book's generated test fold, with
#   stand-in feature networks named as such; the paper's numbers come from its own model,
#   cohort and feature networks, so only the book's rows compare with each other.
# - The sampler table measures what the fast samplers save in time and cost in quality
#   here; the paper's numbers use DDPM-1000 on a GPU.
#
# ## What's next
#
# Chapter 7 looks at the latent space: do generated latents sit where the real ones do?
