"""Six-fold patient-level cross-validation, as the paper's evaluation.

Fold ``k`` is the test fold, fold ``(k + 1) % n`` the validation fold (early stopping and the
Youden threshold), the remaining folds train.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold


def make_stratified_folds(labels, n_folds: int = 6, seed: int = 0) -> np.ndarray:
    """Assign each patient a fold in ``0..n_folds-1``, stratified by label (scikit-learn)."""
    labels = np.asarray(labels).astype(int)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1D, got shape {labels.shape}")
    if len(labels) < n_folds:
        raise ValueError(f"{len(labels)} patients cannot fill {n_folds} folds")
    folds = np.empty(len(labels), dtype=int)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class smaller than n_folds leaves some folds without it
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, test) in enumerate(skf.split(np.zeros(len(labels)), labels)):
            folds[test] = k
    return folds


def fold_split(folds, test_fold: int, n_folds: int = 6) -> dict[str, np.ndarray]:
    """Index arrays ``train``, ``val``, ``test`` for one test fold."""
    folds = np.asarray(folds).astype(int)
    if not 0 <= test_fold < n_folds:
        raise ValueError(f"test_fold {test_fold} out of range 0..{n_folds - 1}")
    val_fold = (test_fold + 1) % n_folds
    idx = np.arange(len(folds))
    return {
        "train": idx[(folds != test_fold) & (folds != val_fold)],
        "val": idx[folds == val_fold],
        "test": idx[folds == test_fold],
    }


def split_table(df: pd.DataFrame, test_fold: int = 0, n_folds: int = 6) -> pd.DataFrame:
    """The paper's Table 8 layout: patients and PE share in train, validation and test."""
    parts = fold_split(df["fold"].to_numpy(), test_fold, n_folds)
    labels = df["pe_label"].to_numpy().astype(int)
    rows = []
    for name, idx in [
        ("Train", parts["train"]),
        ("Validation", parts["val"]),
        ("Test", parts["test"]),
        ("Total", np.arange(len(df))),
    ]:
        n_pe = int(labels[idx].sum())
        rows.append(
            {
                "split": name,
                "patients": len(idx),
                "PE": n_pe,
                "non-PE": len(idx) - n_pe,
                "PE %": round(100 * n_pe / max(len(idx), 1), 1),
            }
        )
    return pd.DataFrame(rows).set_index("split")
