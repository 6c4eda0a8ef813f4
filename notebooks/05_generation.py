# ---
# jupyter:
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
# For every held-out patient the generator produces a CTPA from the X-ray alone: the
# latent of both half volumes is sampled from noise with the X-ray embedding as the
# condition, decoded slice by slice by the VAE, and the halves are re-interleaved. All of
# it is one call of `XRay2CTPAPipeline`, the same one `xr2ct generate` makes.
#
# **Objectives**
#
# 1. Generate test fold 0 and validation fold 1 (held out of every bundle's training) with
#    the bundle of the `weights` parameter and the profile's fast sampler, and time it.
# 2. Measure each volume against its ground truth: PSNR, SSIM, and the gap between
#    neighbouring slices, which shows whether the two halves agree.
# 3. Ask whether the X-ray helps: the same patients and noise seeds generated without it,
#    and the per-patient gain with a paired bootstrap interval.
# 4. Fig. 2 counterpart: the X-ray, generated and ground-truth key slices.
# 5. Fig. 3 counterpart: PE patients, generated vs ground truth, with the true clots.
# 6. Fig. 9 counterpart: the worst cases by PSNR.
#
# **Prerequisites**: chapter 1 (the cohort); with `weights="trained"`, chapters 2–4. Your
# own cohort: `xr2ct train --run-dir RUN_DIR` (its bundle `RUN_DIR/bundle` is used), then
# this notebook with `manifest` and `run_dir`; without clot masks Fig. 3 is skipped. About
# a minute and a half in `workshop` (90 s on one thread beside another notebook in `make
# book`, reference_s 2.3), most of it generating the 40 held-out patients twice.
#
# In a fresh clone, `.venv/bin/xr2ct run-notebooks --only 05 --with-prerequisites`
# runs the chapters this one reads, then this one (in JupyterLab: once, in a terminal).
#
# The volumes are cached in `<run_dir>/generated/` for chapters 6–12, keyed by the
# bundle, sampler, steps and each patient's seed; the seed is in the table below, so that
# `xr2ct generate --cxr <the patient's X-ray> --checkpoint <bundle> --seed <seed>`
# reproduces a volume bit for bit on the same machine.

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0
weights = "shipped"

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from xr2ct_lib import book
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval import fidelity
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.generation.cache import generate_patients
from xr2ct_lib.generation.load import load_generator
from xr2ct_lib.models.bundle import show as shown
from xr2ct_lib.run.networks import networks_for
from xr2ct_lib.study.embed import volume_viewers
from xr2ct_lib.viz.panels import key_slices
from xr2ct_lib.viz.provenance import Provenance, save_figure, save_table

cfg = book.setup(profile, manifest, run_dir, seed, weights)
cohort = PreparedCohort(cfg.run_dir)
pipe = load_generator(cfg)  # the shipped bundle's, or chapter 4's live run
held_out = [pid for pid, f in zip(cohort.ids, cohort.folds, strict=True) if f in (0, 1)]
NETS = networks_for(cfg).describe()
print(f"{len(held_out)} held-out patients (folds 0 and 1)")
print(NETS)

# %% [markdown]
# ## Generating the held-out patients

# %%
timing = generate_patients(cfg, pipe, held_out)
made = timing[~timing["reused"]]
print(
    f"{timing.sampler.iloc[0]}, {timing.steps.iloc[0]} steps: "
    + (f"{made.seconds.mean():.2f} s per volume on this machine, {made.seconds.sum():.0f} s "
       f"for {len(made)}" if len(made) else "all volumes reused from the cache")
)  # fmt: skip
gen = {pid: v["ct"] for pid, v in load_generated(cfg).items() if pid in held_out}
gt = {pid: cohort.load(pid) for pid in held_out}

# %% [markdown]
# ## How close is each volume to its ground truth?
#
# PSNR and 3D SSIM compare the generated volume with the real CT voxel by voxel (the
# paper's Table 2 reports "0.58 ± 0.08" SSIM and "19.41 ± 0.96" PSNR for its model on
# real data; chapter 6 has the full table). The neighbour gap is the mean absolute
# difference between each even slice and the odd slice after it, in [−1, 1] units. In a
# real CT neighbouring slices are nearly equal. The paper's model generates "only a
# maximum of 64 frames along the z-axis"; read as the book reads it, the even and the odd
# half are two separate samples; nothing ties them together but the X-ray, so a weakly
# trained model could give two slightly different volumes, and interleaving them would
# show as horizontal stripes in coronal views. Denoising both halves as one sample
# (`Profile.halves = "joint"`) ties them; whether either layout actually shows a larger
# gap than the ground truth is chapter 10's measurement (both layouts, same budget).

# %%
table = fidelity.fidelity_table(gen, {p: gt[p]["ct"] for p in held_out}, held_out)
table = table.join(timing.set_index("patient_id")[["seed"]])
s = fidelity.summary(table)
display(save_table(table.round(4), cfg, "05_fidelity_per_patient",
                   f"Held-out patients: PSNR, SSIM and neighbour-slice gap of the generated "
                   f"volume, and the noise seed ({timing.sampler.iloc[0]}, "
                   f"{timing.steps.iloc[0]} steps)", networks=NETS))  # fmt: skip
display(Markdown(
    f"Over {len(table)} held-out patients: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.3f}; "
    f"the generated volumes' neighbour gap is {s['gap_generated']:.4f} against "
    f"{s['gap_truth']:.4f} in the ground truth (ratio {s['gap_ratio']:.2f}; "
    f"{'within' if abs(s['gap_ratio'] - 1) <= 0.25 else 'outside'} 25 % of the ground truth) "
    f"with {cfg.profile.halves} halves."
))  # fmt: skip

# %% [markdown]
# ## Does the X-ray help? The same patients generated without it
#
# The same held-out patients, generated with the same noise seeds but with the condition
# dropped (guidance scale 0: the unconditional model the paper's Table 3 compares against).
# A per-patient difference removes what the patients share; its interval comes from
# resampling patients (paired bootstrap). If the X-ray carries the patient into the volume,
# the conditional volumes should be closer to their own CT.

# %%
generate_patients(cfg, pipe, held_out, guidance_scale=0.0, out_dir="generated_uncond")
uncond = {p: v["ct"] for p, v in load_generated(cfg, "generated_uncond").items()}
gains = fidelity.paired_gains(
    table,
    fidelity.fidelity_table(uncond, {p: gt[p]["ct"] for p in held_out}, held_out),
    seed=cfg.seed,
)
display(save_table(gains.round(4), cfg, "05_conditional_gain",
                   "Conditional vs unconditional generation of the held-out patients (same "
                   "noise seeds): mean PSNR and SSIM, and the per-patient gain with its paired "
                   "bootstrap 95 % interval", networks=NETS))  # fmt: skip
display(Markdown(fidelity.gains_reading(gains)))

# %% [markdown]
# ## Fig. 2 counterpart: X-ray, ground truth and generated CTPA

# %%
fig = key_slices(held_out[:3], gen, gt, title="Fig. 2 counterpart: X-ray, ground truth and "
                 "generated CTPA")  # fmt: skip
save_figure(fig, cfg, "05_fig2", networks=NETS)
plt.show()

# %% [markdown]
# The same first patient in three planes, ground truth above the generated CTPA, in the
# reader kit's viewer (chapter 12): scroll a plane with the wheel or its slider, click a
# point to move the other two planes there, change the window. It works in the HTML book
# without a kernel.

# %%
pid = held_out[0]
display(volume_viewers(
    {f"{pid}: ground truth": gt[pid]["ct"], f"{pid}: generated from the X-ray": gen[pid]},
    f"{pid} in three planes: ground truth and generated CTPA",
    Provenance.of(cfg, networks=NETS).line(),
))  # fmt: skip

# %% [markdown]
# ## PE patients: are the clots there? (Fig. 3)
#
# The red outline is the true clot, drawn on both the real and the generated slice. A
# generated volume can only show a filling defect if the X-ray embedding carried it.

# %%
pe = [p for p in held_out if gt[p]["clot"].any()][:3]
if pe:
    fig = key_slices(pe, gen, gt, clots=True, title="Fig. 3 counterpart: PE patients, true "
                     "clots in red")  # fmt: skip
    save_figure(fig, cfg, "05_fig3", networks=NETS)
    plt.show()
else:
    display(Markdown("**Fig. 3 skipped:** no held-out PE patient has a clot mask "
                     "(`clot_path`) to outline."))  # fmt: skip

# %% [markdown]
# ## The worst cases (Fig. 9)

# %%
worst = table["PSNR (dB)"].sort_values().index[:2].tolist()
fig = key_slices(worst, gen, gt, title="Fig. 9 counterpart: lowest PSNR among the held-out "
                 "patients")  # fmt: skip
save_figure(fig, cfg, "05_fig9", networks=NETS)
plt.show()

# %% [markdown]
# ## Summary

# %%
best = table["SSIM"].idxmax()
simulated = bool((cohort.index["source"] == "phantom").any())
display(Markdown(
    f"- {len(held_out)} held-out patients now have a generated CTPA in "
    f"`{shown(cfg.run_dir / 'generated')}`, read by chapters 6–12, made with {NETS}.\n"
    f"- SSIM ranged from {table['SSIM'].min():.3f} to {table['SSIM'].max():.3f} (best: "
    f"{best}); the neighbour gap ratio generated / ground truth was {s['gap_ratio']:.2f}.\n"
    + ("- These are simulated patients and in-book networks: the numbers show the method "
       "running end to end, not the paper's clinical results." if simulated else
       f"- These are the patients of {cfg.manifest.name}, generated by the bundle trained "
       "on its training folds; folds 0 and 1 were held out of that training.")
))  # fmt: skip

# %% [markdown]
# ## What's next
#
# Chapter 6 measures the generated volumes with the paper's metrics.
