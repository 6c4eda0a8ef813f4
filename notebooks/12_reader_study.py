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
import time

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from xr2ct_lib.config import load_config
from xr2ct_lib.eval import stats
from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.models.bundle import show as shown
from xr2ct_lib.study import automated as auto
from xr2ct_lib.study.cases import gather_cases
from xr2ct_lib.study.kit import kit_from_run
from xr2ct_lib.study.preview import case_preview
from xr2ct_lib.study.score import PHASES, read_key, score_responses
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
paper = pd.DataFrame(
    {"Accuracy": [0.75, 0.75], "Sensitivity": [0.8, 0.9], "Specificity": [0.7, 0.6],
     "McNemar p (phase 1 vs 2)": [0.025, 0.033]},
    index=pd.Index(["Reader 1", "Reader 2"], name="Experts (paper)"),
)  # fmt: skip
display(paper.style.set_caption("Paper, Table 6 and text: two board-certified radiologists, "
                                "20 patients (10 PE), phase 2").format(precision=3))  # fmt: skip

# %% [markdown]
# ## Which cases go into the kit
#
# The PE task needs patients with a generated CTPA; the paper used 10 PE and 10 non-PE. The
# run directory decides how many a kit can hold: chapter 5 generates the held-out test
# patients only, so a small cohort may offer fewer than ten PE patients. The kit then holds
# as many as the run has, the same number of each class, and says so.

# %%
run = gather_cases(cfg.run_dir)
gen_pe = sum(run.labels[p] for p in run.generated_ids)
gen_counts = {"PE": gen_pe, "non-PE": len(run.generated_ids) - gen_pe}
n_per_class = min(10, *gen_counts.values())
n_realism = min(10, len(run.generated_ids))
display(Markdown(
    f"{len(run.generated_ids)} generated volumes in `{shown(run.generated_dir)}` "
    f"({gen_counts['PE']} PE, {gen_counts['non-PE']} non-PE) of {len(run.labels)} prepared "
    f"patients: the kit takes **{n_per_class} PE + {n_per_class} non-PE** cases"
    + (" (the paper: 10 + 10)" if n_per_class < 10 else "")
    + f" and {n_realism} real + {n_realism} generated volumes."
))  # fmt: skip

# %% [markdown]
# ## Building the kit
#
# `kit_from_run` (the same function as `xr2ct reader-kit`) draws the cases with the seed,
# gives each a random code, shuffles each part, and writes `reader_kit/index.html` with every
# image inline: each volume is one PNG sprite sheet of its axial slices, which the page
# decodes into a volume and shows as axial, coronal and sagittal slices. The key goes to
# `reader_kit-key.csv`, **beside** the folder: the folder is what participants receive.

# %%
kit = None
if n_per_class >= 1:
    t0 = time.perf_counter()
    kit = kit_from_run(cfg.run_dir, cfg.run_dir / "reader_kit", seed=cfg.seed,
                       n_per_class=n_per_class, n_realism=n_realism)  # fmt: skip
    build_s = time.perf_counter() - t0
    key = read_key(kit.key_path)
    summary = pd.Series({
        "kit folder": shown(kit.path), "answer key (keep apart)": shown(kit.key_path),
        "kit id": kit.kit_id, **{k: str(v) for k, v in kit.counts.items()},
        "index.html size": f"{kit.html_bytes / 1e6:.2f} MB", "build time": f"{build_s:.1f} s",
    }, name="reader kit")  # fmt: skip
    display(summary.to_frame())
    for note in kit.notes:
        display(Markdown(f"**Note:** {note}."))
else:
    display(Markdown(
        f"**No kit:** the PE task needs at least one PE and one non-PE patient with a generated "
        f"CTPA, and this run has {gen_counts['PE']} and {gen_counts['non-PE']}. Run chapter 5 "
        "first."
    ))  # fmt: skip

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
if kit is not None:
    pid = key.patient_id[key.task == "pe_ctpa"].iloc[0]
    fig = case_preview(run.cxr(pid), run.generated_ct(pid), "Phase 2 as the kit shows it: "
                       "X-ray and generated CTPA (middle slices)")  # fmt: skip
    save_figure(fig, cfg, "12_kit_case", networks=GEN)
    plt.show()

# %% [markdown]
# ## The analysis, on two automated readers
#
# Chapter 8 cross-validated an X-ray classifier and read the generated CTPA with the
# real-CTPA classifier; each patient was scored by the model of its own test fold, at that
# fold's validation threshold. Here they answer the kit's PE cases: the **X-ray classifier as the
# phase-1 reader** and the **real-CTPA clot reader reading the generated CTPA as the
# phase-2 reader**. Their answers go through exactly the code that scores people's CSV files.

# %%
cv_dir = cfg.run_dir / "cv"
preds = {"pe_cxr": auto.cv_predictions(cv_dir, auto.CXR_CV),
         "pe_ctpa": auto.cv_predictions(cv_dir, auto.GENERATED_CV)}  # fmt: skip
READER = "automated readers"  # phase 1: X-ray classifier; phase 2: clot reader on generated CTPA
NETS = (
    "chapter 8 classifiers (its X-ray classifier and clot reader; automated readers, "
    "not radiologists); " + GEN
)
scores = None
if kit is None:
    display(Markdown("**Skipped:** there is no kit (see above), so there are no cases to read."))
elif preds["pe_cxr"] is None:
    display(
        Markdown(f"**Skipped:** no X-ray classifier results in `{shown(cv_dir)}`: run chapter 8.")
    )
else:
    if preds["pe_ctpa"] is None:
        display(Markdown(
            f"**Phase 2 skipped:** `{shown(cv_dir)}` has no generated-CTPA predictions (chapter 8 "
            "writes them only when chapter 5 ran before it). Phase 1 alone is shown."
        ))  # fmt: skip
    responses, missing = auto.automated_responses(
        key, {t: p for t, p in preds.items() if p is not None}, READER
    )
    for task, codes in missing.items():
        if codes:
            display(Markdown(f"**Note:** {len(codes)} {PHASES[task]} case(s) have no "
                             "cross-validated prediction and stay unanswered."))  # fmt: skip
    atomic_write_text(cfg.path("reader_automated_responses.csv"),
                      responses.to_csv(index=False))  # fmt: skip
    scores = score_responses(responses, key)
    cols = ["cases", "accuracy", "sensitivity", "specificity", "ppv", "npv", "tp", "fp", "tn",
            "fn"]  # fmt: skip
    display(save_table(auto.automated_table(scores.pe[cols]), cfg, "table6_automated_readers",
                       "Table 6 counterpart: PE categorisation of the kit's cases by two "
                       "automated readers (phase 1: the X-ray classifier; phase 2: the clot reader "
                       "reading the generated CTPA alone, without the X-ray)",
                       networks=NETS))  # fmt: skip
    for line in auto.constant_callers(auto.automated_table(scores.pe)):
        display(Markdown(line))

# %% [markdown]
# ### Phase 1 against phase 2: the exact McNemar test
#
# Both phases read the same patients, so the comparison is paired: only the **discordant**
# cases count, those right in one phase and wrong in the other. Under the null hypothesis
# each discordant case is equally likely to go either way, and the exact test is a binomial
# test on them (`statsmodels`' `mcnemar(exact=True)`).

# %%
if scores is not None and not scores.comparison.empty:
    display(save_table(scores.comparison, cfg, "12_mcnemar_automated",
                       "Phase 1 vs phase 2 on the same cases (exact McNemar)",
                       networks=NETS))  # fmt: skip
    c = scores.comparison.iloc[0]
    display(Markdown(
        f"On these {c.cases:.0f} cases, accuracy goes from {c['accuracy phase 1']:.2f} (X-ray "
        f"classifier) to {c['accuracy phase 2']:.2f} (classifier reading the generated CTPA); "
        f"{c['right only in phase 2']:.0f} case(s) are right only in phase 2 and "
        f"{c['right only in phase 1']:.0f} only in phase 1, exact McNemar p = "
        f"{c['McNemar exact p']:.3f}."
    ))  # fmt: skip
elif scores is not None:
    display(Markdown("No phase-2 answers, so no phase comparison."))

# %% [markdown]
# ### What 20 cases can show
#
# A study this small can only detect large effects. The smallest result that reaches
# p < 0.05, computed with the same tests:

# %%
gain = next(k for k in range(1, 21) if stats.mcnemar(
    [1] * k, [0] * k, [1] * k, exact=True)["p"] < 0.05)  # fmt: skip
right = next(k for k in range(10, 21) if stats.binomial_test(k, 20)["p"] < 0.05)
display(Markdown(
    f"- **McNemar:** with no case lost between phases, at least **{gain} cases gained** "
    f"(p = {stats.mcnemar([1] * gain, [0] * gain, [1] * gain, exact=True)['p']:.3f}); every "
    "case lost raises the bar.\n"
    f"- **Real or generated:** at least **{right} of 20** volumes called right "
    f"(p = {stats.binomial_test(right, 20)['p']:.3f}, two-sided) before a reader is shown to "
    "tell them apart better than chance."
))  # fmt: skip

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
lines = []
if kit is not None:
    lines.append(f"- The kit `{kit.path.name}` holds {kit.counts['PE cases']} PE-task cases "
                 f"and {kit.counts['volumes (real-or-generated)']} volumes in "
                 f"{kit.html_bytes / 1e6:.1f} MB, built in {build_s:.1f} s; its key lies "
                 "beside it.")  # fmt: skip
if scores is not None and not scores.pe.empty:
    for (_, phase), r in scores.pe.iterrows():
        lines.append(f"- Automated reader, {phase}: accuracy {r.accuracy:.2f}, sensitivity "
                     f"{r.sensitivity:.2f}, specificity {r.specificity:.2f} on {r.cases:.0f} "
                     "cases.")  # fmt: skip
lines.append("- These are classifiers on simulated patients: the rows show the analysis a "
             "workshop runs on its participants' answers, not a clinical result.")  # fmt: skip
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## What's next
#
# Run the kit with colleagues and score their answers with `xr2ct reader-score`. To build
# it from your own cohort, prepare it (`xr2ct prepare --manifest my.csv`), run chapters 1–5
# and `xr2ct reader-kit` on that run directory.
