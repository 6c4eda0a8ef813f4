"""What an embedding carries: linear probes of the simulation's findings.

A CXR encoder conditions the generator; whatever its embedding does not carry, the generated
volume cannot show. :func:`probe_table` fits, per finding, a logistic regression on the
embeddings of patients with known findings (stratified k-fold, so every AUC is on patients the
probe did not fit) and reports its AUC: the findings a radiograph shows (RV strain, PA
enlargement, each effusion, LV cardiomegaly) and PE.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xr2ct_lib.train.readers.cxr import FINDINGS, output_label

PROBED = ("pe", "rv_strain", "pa_enlargement", "effusion_left", "effusion_right",
          "lv_cardiomegaly")  # fmt: skip


def probe_targets(records: pd.DataFrame, names=PROBED) -> dict[str, np.ndarray]:
    """Each probed finding's 0/1 indicator from the simulation's records."""
    out = {}
    for n in names:
        v = records["pe_label"] if n == "pe" else FINDINGS[n](records)
        out[n] = np.asarray(v, dtype=int)
    return out


def probe_auc(emb: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated AUC of a standardised logistic regression from ``emb`` to ``y``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y, dtype=int)
    if min(np.bincount(y, minlength=2)) < folds:
        return float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p = cross_val_predict(probe, np.asarray(emb, np.float64), y, cv=cv, method="predict_proba")
    return float(roc_auc_score(y, p[:, 1]))


def probe_table(embeddings: dict[str, np.ndarray], records: pd.DataFrame, names=PROBED,
                folds: int = 5) -> pd.DataFrame:  # fmt: skip
    """One row per finding (with the number of patients who have it), one AUC column per
    embedding in ``embeddings`` (name → (N, dim), the patients of ``records``)."""
    ys = probe_targets(records, names)
    rows = []
    for n, y in ys.items():
        row = {"finding": output_label(n), "patients with it": int(y.sum())}
        row.update({k: round(probe_auc(e, y, folds), 3) for k, e in embeddings.items()})
        rows.append(row)
    return pd.DataFrame(rows).set_index("finding")


def probe_record_path(profile_name: str):
    """``benchmarks/results/encoder_probe_<profile>.json`` (``benchmarks/encoder_probe.py``)."""
    from xr2ct_lib.config import REPO_ROOT

    return REPO_ROOT / "benchmarks" / "results" / f"encoder_probe_{profile_name}.json"


def load_probe_record(profile_name: str) -> dict | None:
    """The recorded fresh-patient probes of a profile's encoders, or None."""
    import json

    path = probe_record_path(profile_name)
    return json.loads(path.read_text()) if path.is_file() else None


def probe_record_table(rec: dict) -> pd.DataFrame:
    """The recorded probes: one row per finding, one AUC column per encoder and input."""
    return pd.DataFrame(rec["table"]).set_index("finding")


def probe_reading(rec: dict, findings=("RV strain", "PA enlargement", "effusion left",
                                         "effusion right")) -> str:  # fmt: skip
    """One Markdown sentence from the record: each encoder's probe AUC on the X-ray for the
    findings a generated CTPA should carry."""
    t = probe_record_table(rec)
    cols = [c for c in t.columns if c.endswith(": X-ray")]
    parts = []
    for c in cols:
        vals = ", ".join(f"{f} {t.loc[f, c]:.2f}" for f in findings if f in t.index)
        parts.append(f"the {c.removesuffix(': X-ray')}'s embedding of the X-ray: {vals}")
    return (
        f"On {rec['patients']} fresh simulated patients (seeds no other set uses; "
        f"`{rec['command']}`), a linear probe reads " + "; ".join(parts) + "."
    )
