"""The book's classifiers as automated readers of the kit, in the readers' CSV format.

Chapter 8 writes each classifier's pooled cross-validation predictions under
``<run_dir>/cv/<name>_pooled.csv``; a patient's prediction comes from the model of its own
test fold, at that fold's validation (Youden) threshold. Phase 1 is read by the X-ray
classifier, phase 2 by the real-CTPA classifier reading the generated CTPA. They are
programs, not radiologists: their rows demonstrate the analysis, nothing more.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xr2ct_lib.eval.crossval import CVResult

# names chapter 8 gives its results (CVResult.to_csv)
CXR_CV = "cxr_only"
GENERATED_CV = "generated_ctpa"


def cv_predictions(cv_dir: str | Path, name: str) -> pd.Series | None:
    """``patient_id → 0/1`` predictions of one cross-validated classifier; None when absent."""
    try:
        pooled = CVResult.from_csv(cv_dir, name).pooled()
    except FileNotFoundError:
        return None
    return pooled.set_index("patient_id")["pred"].astype(int)


def automated_responses(
    key: pd.DataFrame, predictions: dict[str, pd.Series], reader: str
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Answer the key's cases of each task in ``predictions`` (``{"pe_cxr": preds, ...}``).

    Returns the responses (the kit's CSV columns) and, per task, the case codes whose patient
    has no prediction (left unanswered).
    """
    rows, missing = [], {}
    for task, pred in predictions.items():
        cases = key[key.task == task]
        if cases.empty:
            raise ValueError(f"the key has no {task} cases")
        missing[task] = []
        for code, pid in zip(cases.code, cases.patient_id, strict=True):
            if pid not in pred.index:
                missing[task].append(code)
                continue
            rows.append({"kit_id": key.kit_id.iloc[0], "reader": reader, "task": task,
                         "code": code, "answer": "pe" if pred[pid] == 1 else "no_pe",
                         "anatomy": "", "consistency": ""})  # fmt: skip
    return pd.DataFrame(rows), missing


# What each phase is for the automated readers: a person in phase 2 sees the X-ray and the
# generated CTPA; the automated phase-2 reader is the clot reader on the generated CTPA alone.
AUTOMATED_PHASES = {
    "phase 1: X-ray": "phase 1: X-ray classifier on the X-ray",
    "phase 2: X-ray + generated CTPA": "phase 2: clot reader on the generated CTPA alone",
}


def automated_table(pe: pd.DataFrame) -> pd.DataFrame:
    """The PE rows of :func:`~xr2ct_lib.study.score.score_responses` for the automated
    readers, each phase named by what the automated reader read."""
    return pe.rename(index=AUTOMATED_PHASES, level="phase")


def constant_callers(pe: pd.DataFrame) -> list[str]:
    """Sentences for the rows whose reader gave every case the same answer (all PE:
    sensitivity 1 and specificity 0; or none), which no accuracy figure shows by itself."""
    out = []
    for (reader, phase), r in pe.iterrows():
        if r.fp + r.tp == r.cases:
            what = "PE"
        elif r.tn + r.fn == r.cases:
            what = "not PE"
        else:
            continue
        out.append(f"In {phase}, the {reader} called all {r.cases:.0f} cases {what} "
                   f"(sensitivity {r.sensitivity:.2f}, specificity {r.specificity:.2f}): "
                   "its threshold, set on chapter 8's validation folds, does not separate "
                   "these cases.")  # fmt: skip
    return out
