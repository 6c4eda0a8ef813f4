"""Ceilings of the simulated cohort: the AUC an ideal reader of the simulation's own records
would reach from what each modality shows.

The simulation draws every patient's findings from known probability tables
(:mod:`xr2ct_lib.data.phantom.model`). A reader that sees a modality's observation pattern
(e.g. an X-ray shows an enlarged heart but not which ventricle) and knows those tables
ranks patients best by the likelihood ratio P(pattern | PE) / P(pattern | no PE)
(Neyman–Pearson), computed exactly by enumerating the model. Its AUC on a cohort is a
ceiling for that modality *in this simulation*, computed from ground truth, not a result
of any network. The ``shared`` ceiling is the most a CTPA generated from the X-ray can
carry: the X-ray's findings that a windowed CT can depict.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xr2ct_lib.data.phantom.model import FINDINGS, OBSERVATIONS, pattern_probabilities
from xr2ct_lib.eval.stats import delong_ci
from xr2ct_lib.utils import Skipped

CEILINGS = {
    "xray": "X-ray (what a radiograph shows)",
    "shared": "shared (the most a CTPA generated from the X-ray can carry)",
    "ct_signs": "CT, indirect signs only",
    "ct_central_lobar": "CT, signs + central and lobar clots",
    "ct_all_clots": "CT, signs + every clot",
}


def _findings(row) -> dict:
    f = {k: int(row[k]) for k in FINDINGS}
    f["reflux"] = int(row["reflux"])
    f["state"] = str(row["burden"])
    return f


def likelihood_ratios(records: pd.DataFrame, modality: str) -> np.ndarray:
    """Each patient's likelihood ratio under ``modality``'s observation map (``inf`` where the
    pattern is impossible without PE)."""
    observe = OBSERVATIONS[modality][1]
    probs = pattern_probabilities(observe)
    out = []
    for _, row in records.iterrows():
        key = observe(_findings(row))
        p1, p0 = probs[1].get(key, 0.0), probs[0].get(key, 0.0)
        if p1 == 0 and p0 == 0:
            raise ValueError(f"pattern {key} is impossible under the model")
        out.append(np.inf if p0 == 0 else p1 / p0)
    return np.asarray(out, dtype=float)


def expected_auc(modality: str) -> float:
    """Population AUC of the ideal reader of ``modality`` (exact, over the model's patterns;
    ties count one half)."""
    probs = pattern_probabilities(OBSERVATIONS[modality][1])
    keys = set(probs[0]) | set(probs[1])
    lr = {k: np.inf if probs[0].get(k, 0) == 0 else probs[1].get(k, 0) / probs[0][k] for k in keys}
    auc = 0.0
    for k1, p1 in probs[1].items():
        for k0, p0 in probs[0].items():
            auc += p1 * p0 * (1.0 if lr[k1] > lr[k0] else 0.5 if lr[k1] == lr[k0] else 0.0)
    return float(auc)


def _ranks(lr: np.ndarray) -> np.ndarray:
    """Finite scores in the order of ``lr`` (ties kept; DeLong needs finite values)."""
    from scipy.stats import rankdata

    return rankdata(lr)


def ceilings_table(records: pd.DataFrame, modalities=tuple(CEILINGS)) -> pd.DataFrame:
    """One row per ceiling: what it reads, its AUC on ``records`` with DeLong's 95 % CI,
    and the model's population AUC. ``records`` needs ``pe_label``, ``burden``, every
    finding and ``reflux`` (the cohort's records table)."""
    y = records["pe_label"].to_numpy(int)
    rows = []
    for m in modalities:
        r = delong_ci(y, _ranks(likelihood_ratios(records, m)))
        rows.append({
            "ceiling": CEILINGS[m], "reads": OBSERVATIONS[m][0], "AUC": round(r.auc, 3),
            "95% CI": f"{r.lo:.2f}–{r.hi:.2f}", "population AUC": round(expected_auc(m), 3),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("ceiling")


def cohort_ceilings(records: pd.DataFrame) -> pd.DataFrame | Skipped:
    """:func:`ceilings_table` of a cohort's records; skipped for a cohort without them."""
    if records.empty:
        return Skipped("this cohort has no simulated patients: no ground truth to set a ceiling")
    return ceilings_table(records)


def reading(ceilings: pd.DataFrame | Skipped, patients: int, n_train: int) -> str:
    """One Markdown paragraph: the ceilings of :func:`cohort_ceilings` on ``patients``
    patients and what they mean for the classifiers (``n_train``: patients a fold trains
    on); empty when skipped."""
    if isinstance(ceilings, Skipped):
        return ""
    c = ceilings["AUC"].rename(index={v: k for k, v in CEILINGS.items()})
    return (
        f"On these {patients} patients the X-ray ceiling is {c['xray']:.2f}, the "
        f"shared one {c['shared']:.2f}, and the CT's {c['ct_signs']:.2f} from its "
        f"indirect signs alone, {c['ct_central_lobar']:.2f} with central and lobar "
        f"clots. A classifier reads noisy images, not these records, and each fold "
        f"trains it on {n_train} patients (chapter 8's readers are pretrained on "
        f"other simulated patients first), so we expect it below these; a classifier "
        f"on CTPAs generated from the X-rays cannot exceed the shared ceiling, however "
        f"good the generator."
    )


def beside_table1(table1: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Table 1 (:func:`xr2ct_lib.eval.crossval.results_table`) with the ceilings on the same
    ``records`` appended as rows: AUC (95 % CI), mean fold AUC where there is one, and what
    each row is (a trained classifier, or a ceiling computed from ground truth). Without
    records (a real cohort) there are no ceilings: Table 1 comes back alone."""
    t = table1[["AUC (95% CI)", "fold AUC", "patients"]].copy()
    t.insert(0, "kind", "classifier (pooled test folds)")
    if records.empty:
        return t
    c = ceilings_table(records)
    rows = pd.DataFrame(
        {
            "kind": "ceiling (ground truth of the simulation)",
            "AUC (95% CI)": [
                f"{a:.2f} ({ci})" for a, ci in zip(c["AUC"], c["95% CI"], strict=True)
            ],
            "fold AUC": "",
            "patients": len(records),
        },
        index=pd.Index([f"ceiling: {i}" for i in c.index], name=t.index.name),
    )
    return pd.concat([t, rows])
