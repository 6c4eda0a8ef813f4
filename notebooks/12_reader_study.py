# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12. A reader study: the X-ray alone, then with the generated CTPA
#
# ## Overview
#
# The paper ends its evaluation with two short studies by two board-certified radiologists
# ("User studies", Table 6). In the first, each reader saw 20 CTPA volumes, 10 real and 10
# generated, said which were which, and rated the generated ones for anatomic correctness
# and slice consistency. In the second, the readers categorised 20 patients (10 PE, 10
# non-PE) as PE or not, first from the chest X-ray alone (accuracy "approximately 50 %"),
# then from the same X-ray with the CTPA generated from it (accuracy 0.75 for both readers,
# McNemar p = 0.025 and 0.033).
#
# This chapter turns that study into a **kit a workshop can run with its participants**:
# one folder that opens from disk in any browser, with no server and no network, and an
# answer key kept outside it. It then shows the analysis on **two automated readers**, the
# classifiers of chapter 8. They are programs, not people: their rows show how the
# statistics are read, not how radiologists would do.
#
# **Objectives**
#
# 1. Build the offline reader kit from this run's generated volumes: blinded case codes, a
#    seeded shuffle, the key beside the kit.
# 2. Compute Table 6 (accuracy, sensitivity, specificity, PPV, NPV per phase), the exact
#    McNemar test of phase 1 against phase 2, and the binomial test of real-or-generated.
# 3. Read what 20 cases can and cannot show.
# 4. Run the study with people, step by step.
# 5. Place the method in the clinical workflow the paper proposes (its Fig. 10).
#
# **Prerequisites**: chapter 5 (generated volumes) for the kit; chapter 8 (cross-validated
# predictions) for the automated readers. No training: a few seconds in `workshop`.
#
# In a fresh clone, `.venv/bin/xr2ct run-notebooks --only 12 --with-prerequisites`
# runs the chapters this one reads, then this one (in JupyterLab: once, in a terminal).

# %% tags=["parameters"]
profile = "workshop"
manifest = None
run_dir = None
seed = 0
weights = "shipped"

# %%
from IPython.display import Markdown, display

from xr2ct_lib.config import load_config
from xr2ct_lib.study.chapter import ReaderStudy, paper_table6, what_20_cases_show
from xr2ct_lib.viz.provenance import save_figure, save_table

cfg = load_config(profile, manifest, run_dir, seed, weights)
GEN = f"X-ray2CTPA model of this run (weights: {weights})"
print(cfg.describe())

# %% [markdown]
# ## The paper's study
#
# Table 6 of the paper, quoted: each radiologist's reading of the 20 patients with the
# generated CTPA (phase 2). Phase 1 is reported only as "approximately 50 %" accuracy "with
# very low sensitivity".

# %%
display(paper_table6().style.set_caption("Paper, Table 6 and text: two board-certified "
                                         "radiologists, 20 patients (10 PE), phase 2")
        .format(precision=3))  # fmt: skip

# %% [markdown]
# ## Which cases go into the kit
#
# The PE task needs patients with a generated CTPA; the paper used 10 PE and 10 non-PE. The
# run directory decides how many a kit can hold: chapter 5 generates the held-out test
# patients only, so a small cohort may offer fewer than ten PE patients. The kit then holds
# as many as the run has, the same number of each class, and says so.

# %%
study = ReaderStudy.of(cfg)
display(Markdown(study.plan()))

# %% [markdown]
# ## Building the kit
#
# `kit_from_run` (the same function as `xr2ct reader-kit`) draws the cases with the seed,
# gives each a random code, shuffles each part, and writes `reader_kit/index.html` with every
# image inline: each volume is one PNG sprite sheet of its axial slices, which the page
# decodes into a volume and shows as axial, coronal and sagittal slices. The key goes to
# `reader_kit-key.csv`, **beside** the folder: the folder is what participants receive.

# %%
display(study.build_kit())
display(Markdown(study.take_notes()))

# %% [markdown]
# ### What a participant sees
#
# Part A shows one volume per case; part B (phase 1) one X-ray; part C (phase 2) the X-ray
# beside its generated CTPA. The viewer scrolls with a slider, the mouse wheel or the arrow
# keys, a click on one plane moves the other two there, and window presets (stored range,
# PE, mediastinum) change the contrast. Orientation is radiological: axial seen from the
# feet with the patient's right on the image left, coronal and sagittal head up. Below, one
# phase-2 case as the kit lays it out (middle slices; no code, no label).

# %%
save_figure(study.case_figure(), cfg, "12_kit_case", networks=GEN)

# %% [markdown]
# ## The analysis, on two automated readers
#
# Chapter 8 cross-validated an X-ray classifier and read the generated CTPA with the
# real-CTPA classifier; each patient was scored by the model of its own test fold, at that
# fold's validation threshold. Here they answer the kit's PE cases: the **X-ray classifier as the
# phase-1 reader** and the **real-CTPA clot reader reading the generated CTPA as the
# phase-2 reader**. Their answers go through exactly the code that scores people's CSV files.

# %%
NETS = ("chapter 8 classifiers (its X-ray classifier and clot reader; automated readers, "
        "not radiologists); " + GEN)  # fmt: skip
display(save_table(study.automated_table(), cfg, "table6_automated_readers", "Table 6 "
                   "counterpart: PE categorisation of the kit's cases by two automated readers "
                   "(phase 1: the X-ray classifier; phase 2: the clot reader reading the "
                   "generated CTPA alone, without the X-ray)", networks=NETS))  # fmt: skip
display(Markdown(study.take_notes()))

# %% [markdown]
# ### Phase 1 against phase 2: the exact McNemar test
#
# Both phases read the same patients, so the comparison is paired: only the **discordant**
# cases count, those right in one phase and wrong in the other. Under the null hypothesis
# each discordant case is equally likely to go either way, and the exact test is a binomial
# test on them (`statsmodels`' `mcnemar(exact=True)`).

# %%
display(save_table(study.mcnemar(), cfg, "12_mcnemar_automated", "Phase 1 vs phase 2 on the "
                   "same cases (exact McNemar)", networks=NETS))  # fmt: skip
display(Markdown(study.mcnemar_reading()))

# %% [markdown]
# ### What 20 cases can show
#
# A study this small can only detect large effects. The smallest result that reaches
# p < 0.05, computed with the same tests:

# %%
display(Markdown(what_20_cases_show()))

# %% [markdown]
# The real-or-generated task and the ratings need people: no classifier here was trained to
# tell real from generated volumes, and a Likert rating is a human judgement.
#
# ## Running the study with people
#
# 1. **Build** the kit for your run (it needs generated volumes, chapter 5):
#    `xr2ct reader-kit --run-dir runs/workshop --out reader_kit --seed 1`. The command checks
#    first that the run has the cases (10 PE + 10 non-PE with a generated CTPA by default;
#    `--cases-per-class` for fewer) and names what is missing otherwise. It prints where it
#    wrote the answer key, `reader_kit-key.csv`: keep that file to yourself.
# 2. **Hand out** the folder `reader_kit/` (zip it, or copy it to a USB stick). Participants
#    open `index.html` by double-clicking it; it needs no installation, no server and no
#    network, and keeps answers in the browser, so a closed tab loses nothing.
# 3. **Each participant** enters a name, then takes part A (20 volumes: real or generated,
#    with two 1–5 ratings), part B (phase 1: the X-rays) and part C (phase 2: the same
#    patients with the generated CTPA), in that order. Finishing a part locks it, so phase 2
#    cannot change phase-1 answers. The parts show cases under random codes in a shuffled
#    order.
# 4. **Collect** the files from "Download responses (CSV)", one per participant.
# 5. **Score** them: `xr2ct reader-score reader_kit responses-*.csv --out reader_tables`.
#    Bad or incomplete files are refused with the file, the row and the problem; the tables
#    are those of this chapter, one row per participant and phase.
#
# Two deliberate differences from the paper: every volume of part A is rated (real ones
# too), blinded, so the key never has to be shown during the session and the real volumes
# give a reference rating; and part A comes first, before the participants have seen which
# volumes are generated.
#
# ## Where the method would sit: the paper's proposed workflow
#
# ```{figure} ../figures/fig10_clinical_workflow.svg
# :name: fig-clinical-workflow
# :width: 100%
#
# The clinical workflow the paper **proposes** (its Fig. 10, redrawn): the generated CTPA,
# read by the PE classifier, refines the pre-test probability of the Wells score and decides
# whether a D-dimer test comes before CT. The branch labels follow the standard Wells /
# D-dimer pathway, our reading of the paper's text. This is a proposal, not a validated
# pathway: the paper says its model does not meet the sensitivity clinical triage needs,
# and this book's numbers come from simulated patients.
# ```

# %% [markdown]
# ## Summary

# %%
display(Markdown(study.summary()))

# %% [markdown]
# ## What's next
#
# Run the kit with colleagues and score their answers with `xr2ct reader-score`. To build
# it from your own cohort, prepare it (`xr2ct prepare --manifest my.csv`), run chapters 1–5
# and `xr2ct reader-kit` on that run directory.
