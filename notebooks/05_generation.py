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
# # 5. Generating CTPA from X-rays
#
# ## Overview
#
# For every test-fold patient, the model of chapter 4 generates a CTPA from the X-ray
# alone: two half-volume latents sampled from noise with the X-ray embedding as the
# condition, decoded slice by slice by the VAE and re-interleaved.
#
# **Objectives**
#
# 1. Generate the test fold with the fast sampler (DDIM) and time it.
# 2. Fig. 2 counterpart: the X-ray, generated and ground-truth key slices, axial and
#    coronal.
# 3. Fig. 3 counterpart: PE patients, generated vs ground truth, with the true clots.
# 4. Fig. 9 counterpart: the worst cases by PSNR.
#
# **Prerequisites**: chapter 4. About 2 minutes in `workshop`.

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
import torch
from IPython.display import display

from xr2ct_lib.config import load_config
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval import metrics as M
from xr2ct_lib.eval.folds import fold_split
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.networks import networks_for
from xr2ct_lib.train import pipeline as pl
from xr2ct_lib.viz.provenance import save_figure, save_table
from xr2ct_lib.viz.volumes import mask_outline, plane_slice

torch.set_num_threads(2)
cfg = load_config(profile, manifest, run_dir, seed, weights)
cohort = PreparedCohort(cfg.run_dir)
model = pl.load_generator(cfg)  # the shipped bundle's, or chapter 4's live run
test_ids = [cohort.ids[i] for i in fold_split(cohort.folds, 0)["test"]]
NETS = networks_for(cfg).describe()
print(cfg.describe(), f"| {len(test_ids)} test patients")

# %% [markdown]
# ## Generating the test fold

# %%
timing = pl.generate_patients(cfg, model, test_ids)
print(
    f"{timing.sampler.iloc[0]}, {timing.steps.iloc[0]} steps: {timing.seconds.mean():.2f} s "
    "per volume on this machine"
)
gen = load_generated(cfg)
gt = {p: cohort.load(p) for p in test_ids}
psnr = M.psnr(np.stack([gen[p]["ct"] for p in test_ids])[:, None],
              np.stack([gt[p]["ct"] for p in test_ids])[:, None])  # fmt: skip


# %%
def key_slices(pids, title, name, clots=False):
    """Rows: X-ray | GT axial | generated axial | GT coronal | generated coronal."""
    fig, axes = plt.subplots(len(pids), 5, figsize=(11, 2.3 * len(pids)), squeeze=False)
    for r, pid in enumerate(pids):
        g, real = gen[pid]["ct"], gt[pid]
        z = int(np.argmax(real["clot"].sum(axis=(1, 2)))) if real["clot"].any() else g.shape[0] // 2
        y = int(np.argmax(real["clot"].sum(axis=(0, 2)))) if real["clot"].any() else g.shape[1] // 2
        panels = [(real["cxr"][0], "X-ray", None),
                  (plane_slice(real["ct"], "axial", z), "GT axial", "axial"),
                  (plane_slice(g, "axial", z), "generated axial", "axial"),
                  (plane_slice(real["ct"], "coronal", y), "GT coronal", "coronal"),
                  (plane_slice(g, "coronal", y), "generated coronal", "coronal")]  # fmt: skip
        for c, (img, label, plane) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", **({} if plane is None else {"vmin": -1, "vmax": 1}))
            if clots and plane is not None:
                mask_outline(ax, plane_slice(real["clot"], plane, z if plane == "axial" else y))
            ax.set_axis_off()
            ax.set_title(f"{pid} {label}" if c == 0 else label, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, cfg, name, networks=NETS)
    plt.show()


key_slices(test_ids[:3], "Fig. 2 counterpart: X-ray, ground truth and generated CTPA", "05_fig2")

# %% [markdown]
# ### Why the generated coronal slices are striped
#
# The model generates the even-slice and the odd-slice half of a volume as two separate
# samples (the paper's split, which halves the memory). Nothing ties the two samples
# together but the X-ray, so a weakly trained model gives two slightly different
# volumes, and interleaving them shows as horizontal stripes in coronal and sagittal
# views. The gap between neighbouring slices measures it: in a real CT neighbouring
# slices are almost equal.


# %%
def neighbour_gap(v):
    """Mean |even slice − odd slice| (in [-1, 1] units)."""
    return float(np.abs(v[0::2] - v[1::2]).mean())


gaps = pd.DataFrame(
    {
        "ground truth": [neighbour_gap(gt[p]["ct"]) for p in test_ids],
        "generated": [neighbour_gap(gen[p]["ct"]) for p in test_ids],
    },
    index=test_ids,
)
display(
    save_table(
        gaps.agg(["mean", "std"]).round(3),
        cfg,
        "05_neighbour_gap",
        "Mean absolute difference between neighbouring axial slices (the two halves)",
        networks=NETS,
    )
)

# %% [markdown]
# ## PE patients: are the clots there? (Fig. 3)
#
# The red outline is the true clot, drawn on both the real and the generated slice. A
# generated volume can only show a filling defect if the X-ray embedding carried it.

# %%
pe = [p for p in test_ids if gt[p]["clot"].any()][:3]
key_slices(pe, "Fig. 3 counterpart: PE patients, true clots in red", "05_fig3", clots=True)

# %% [markdown]
# ## The worst cases (Fig. 9)

# %%
order = np.argsort(psnr)
worst = [test_ids[i] for i in order[:2]]
key_slices(worst, "Fig. 9 counterpart: lowest PSNR in the test fold", "05_fig9")
table = {test_ids[i]: round(float(psnr[i]), 2) for i in order}
display(
    save_table(
        pd.Series(table, name="PSNR (dB)").to_frame(),
        cfg,
        "05_psnr_per_patient",
        "PSNR of each generated test volume",
        networks=NETS,
    )
)

# %% [markdown]
# ## Summary
#
# - Every test patient now has a generated CTPA in `runs/<profile>/generated/`, read by
#   chapters 6–9.
# - With a few hundred CPU training steps the volumes capture the coarse anatomy, not
#   the fine vessels; the paper's model trains for days on a GPU.
#
# ## What's next
#
# Chapter 6 measures the generated volumes with the paper's metrics.
