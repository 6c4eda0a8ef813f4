"""Sign transfer: do the X-ray-visible PE signs survive in the CTPA generated from the X-ray?

Each sign (RV/LV diameter ratio, pulmonary-trunk diameter, pleural effusion volume) is
measured by a linear probe: a ridge regression (scikit-learn ``RidgeCV``) to the sign's
value in the cohort records from the CTPA's VAE latent, the space the generator works in
(:func:`sign_features`; volumes, average-pooled to coarse blocks, are read too). The probe
learns from **real** CTPA and the measured sign values only (never the PE label), and is
cross-fitted: a patient's CTPA, real or generated, is measured by the probe fitted on the
patients of the other folds. Read on the generated CTPA of a held-out patient, it says how
much of the sign the generator carried over from the X-ray (the correlation with the truth,
and the AUC by PE label, next to the same numbers on the real CTPA).

Why latents: a generated CTPA is a latent decoded by the VAE, and a probe fitted on real
volumes does not read decoded ones; it loses the signs even on the VAE's reconstruction of
the real CT itself. Real and generated latents are read in one space by one probe.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from xr2ct_lib.eval.stats import auc_or_nan

SIGNS = {
    "rv_lv_ratio": "RV/LV diameter ratio",
    "pa_diameter_mm": "pulmonary trunk diameter (mm)",
    "effusion_ml": "pleural effusion (mL)",
}
POOL = 4  # 64³ → 16³ blocks of 12 mm at the workshop size


def volume_features(ct: np.ndarray, pool: int = POOL) -> np.ndarray:
    """Volumes (N, D, H, W) → the means of their ``pool``³ blocks, (N, D·H·W / pool³)."""
    ct = np.asarray(ct, np.float32)
    n, d, h, w = ct.shape
    if min(d, h, w) < pool:
        raise ValueError(f"volumes of shape {ct.shape[1:]} are smaller than the {pool}³ blocks")
    d, h, w = d - d % pool, h - h % pool, w - w % pool
    blocks = ct[:, :d, :h, :w].reshape(n, d // pool, pool, h // pool, pool, w // pool, pool)
    return blocks.mean(axis=(2, 4, 6)).reshape(n, -1)


def sign_features(x: np.ndarray) -> np.ndarray:
    """What the probe reads: latents (N, 2, C, d, h, w) flattened, or volumes (N, D, H, W)
    as their block means (:func:`volume_features`)."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4:
        return volume_features(x)
    if x.ndim == 6:
        return x.reshape(len(x), -1)
    raise ValueError(f"expected volumes (N, D, H, W) or latents (N, 2, C, d, h, w), got "
                     f"{x.shape}")  # fmt: skip


def fit_sign_probe(features: np.ndarray, values) -> Pipeline:
    """A ridge probe from :func:`sign_features` (N, F) to sign values (N,) or (N, S), each
    sign with its own penalty (chosen by generalised cross-validation)."""
    values = np.asarray(values, float)
    if not np.isfinite(values).all():
        raise ValueError("sign values hold NaN or inf: the probe needs a measured value per volume")
    ridge = RidgeCV(alphas=np.logspace(0, 5, 11), alpha_per_target=values.ndim == 2)
    return make_pipeline(StandardScaler(), ridge).fit(features, values)


def cross_fitted(ct: np.ndarray, values, folds, others: dict | None = None):
    """Cross-fitted estimates: each CTPA of ``ct`` (latents or volumes, :func:`sign_features`)
    measured by the probe fitted on the other folds; ``values`` (N,) or (N, S). ``others``
    maps a fold to extra CTPA of the same kind (e.g. generated CTPA of that fold's patients)
    measured by the same probe. Returns (estimates shaped like ``values``, {fold:
    estimates})."""
    folds = np.asarray(folds)
    values = np.asarray(values, float)
    x = sign_features(ct)
    est = np.full(values.shape, np.nan)
    extra = {}
    for k in np.unique(folds):
        probe = fit_sign_probe(x[folds != k], values[folds != k])
        est[folds == k] = probe.predict(x[folds == k])
        if others and k in others and len(others[k]):
            extra[k] = probe.predict(sign_features(others[k]))
    return est, extra


def has_signs(records: pd.DataFrame) -> bool:
    """Whether the cohort records hold every sign of :data:`SIGNS` (a simulated cohort does;
    a real one only if its manifest brings the measurements)."""
    return set(SIGNS) <= set(records.columns) and bool(records[list(SIGNS)].notna().all().all())


def _rho(a, b) -> float:
    return float(spearmanr(a, b).statistic) if len(a) > 2 else np.nan


def sign_transfer(
    real_ct: np.ndarray, records: pd.DataFrame, labels, folds, generated: dict[str, np.ndarray],
    ids,
) -> pd.DataFrame:  # fmt: skip
    """The sign-transfer table: per sign, on the held-out patients that have a generated
    CTPA, the truth's AUC by PE label, and for the probe's estimate on the real and on the
    generated CTPA its Spearman correlation with the truth and its AUC by PE label.

    ``real_ct``: the real CTPA as latents (N, 2, C, d, h, w), normalised as the generated
    ones are, or as volumes (N, D, H, W); ``records`` is indexed like ``ids`` (the cohort
    records); ``generated`` maps patient id → the generated CTPA of the same kind and size.
    """
    if not has_signs(records):
        raise ValueError(f"the cohort records lack a value of {list(SIGNS)} for some patient")
    ids = [str(i) for i in ids]
    folds, labels = np.asarray(folds), np.asarray(labels)
    have = np.array([i in generated for i in ids])
    if not have.any():
        raise ValueError("no generated volume for any patient of the cohort: run chapter 5")
    gen_by_fold = {
        k: np.stack([generated[ids[j]] for j in np.flatnonzero(have & (folds == k))])
        for k in np.unique(folds[have])
    }
    order = np.concatenate([np.flatnonzero(have & (folds == k)) for k in gen_by_fold])
    y = labels[order]
    truth_all = records.loc[ids, list(SIGNS)].to_numpy(float)
    est_all, extra = cross_fitted(real_ct, truth_all, folds, gen_by_fold)
    gen_all = np.concatenate([extra[k] for k in gen_by_fold])
    rows = []
    for j, name in enumerate(SIGNS.values()):
        truth, est, gen = truth_all[:, j], est_all[:, j], gen_all[:, j]
        t, r = truth[order], est[order]
        rows.append({
            "sign": name, "patients": len(order),
            "truth AUC (PE)": auc_or_nan(y, t),
            "real: ρ with truth": _rho(r, t), "real: AUC (PE)": auc_or_nan(y, r),
            "generated: ρ with truth": _rho(gen, t), "generated: AUC (PE)": auc_or_nan(y, gen),
            "all real: ρ with truth": _rho(est, truth),
        })  # fmt: skip
    return pd.DataFrame(rows).round(3)


def reading(table: pd.DataFrame) -> str:
    """A Markdown reading of :func:`sign_transfer`'s table, from its numbers."""

    def f(v) -> str:
        return f"{v:.2f}" if np.isfinite(v) else "undefined (one value or one class)"

    lines = []
    for _, r in table.iterrows():
        rho_r, rho_g = r["real: ρ with truth"], r["generated: ρ with truth"]
        kept = rho_g / rho_r if rho_r > 0 and rho_g > 0 else np.nan
        lines.append(
            f"- **{r['sign']}** ({r['patients']} held-out patients): measured on the real CTPA it "
            f"follows the truth with ρ = {f(rho_r)}, on the generated CTPA with ρ = {f(rho_g)}"
            + (f" ({kept:.0%} of the real CTPA's)" if np.isfinite(kept) and kept <= 1 else "")
            + f"; AUC by PE label: truth {f(r['truth AUC (PE)'])}, real "
            f"{f(r['real: AUC (PE)'])}, generated {f(r['generated: AUC (PE)'])}."
        )  # fmt: skip
    return "\n".join(lines)
