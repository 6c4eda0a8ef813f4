"""How much PE signal the cohort offers at a profile's size, before reading Table 1.

A clot covers few voxels, and the VAE shrinks each slice further in-plane before the latent
classifier sees it; the indirect signs, read without error from the simulation's records,
bound what an X-ray reader can reach.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort, load_signs
from xr2ct_lib.eval import stats


def signal_budget(cfg: RunConfig, cohort: PreparedCohort) -> pd.DataFrame:
    """One column (the profile): clot size in voxels and latent voxels, and, for simulated
    cohorts, the AUC of the number of indirect signs with its DeLong CI."""
    ids, labels = cohort.ids, cohort.labels
    clot = cohort.stack("clot") > 0
    vox = clot[labels == 1].sum(axis=(1, 2, 3))
    f = cfg.profile.half_size[1] // cfg.profile.latent_shape[2]  # in-plane VAE factor
    signs = load_signs(cfg.run_dir)
    budget = pd.Series(
        {
            "volume (voxels)": " × ".join(map(str, clot.shape[1:])),
            "clot voxels per PE patient, median (range)": (
                f"{np.median(vox):.0f} ({vox.min()}–{vox.max()})"
            ),
            "clot share of the volume, median": f"{np.median(vox) / clot[0].size:.3%}",
            f"clot footprint per half in latent voxels (÷ 2 halves ÷ {f}²), median": (
                f"{np.median(vox) / 2 / f**2:.2f}"
            ),
        },
        name=cfg.profile.name,
    )
    if set(ids) <= set(signs.index):  # simulated patients: the simulation knows their signs
        sign_auc = stats.delong_ci(labels, signs.loc[list(ids)].sum(axis=1))
        budget[f"AUC of the number of indirect signs ({', '.join(signs.columns)})"] = (
            f"{sign_auc.auc:.2f} ({sign_auc.lo:.2f}–{sign_auc.hi:.2f})"
        )
    return budget.to_frame()


def auc_by_burden(
    result, records: pd.DataFrame, ct: np.ndarray, clot: np.ndarray, ids
) -> pd.DataFrame:
    """Where a classifier finds PE: per clot-burden class of the simulation, its pooled test
    AUC against the patients without PE (DeLong CI), with the clots' size and how bright
    their voxels are at the profile size (HU in the paper's window; an enhanced lumen is
    brighter, lung air clips at −100, so a clot voxel near −100 HU is mostly lung).

    ``result`` is a :class:`~xr2ct_lib.eval.crossval.CVResult`; ``records`` the cohort
    records (column ``burden``); ``ct`` (N, D, H, W) in [−1, 1] and ``clot`` masks of ``ids``.
    """
    from xr2ct_lib.data.hu_window import PAPER_WINDOW

    if "burden" not in records.columns:
        raise ValueError("the cohort records have no `burden` column (a simulated cohort has)")
    p = result.pooled().set_index("patient_id")
    row = {str(i): j for j, i in enumerate(ids)}
    burden = records.reindex(p.index).burden
    neg = p.y_true[burden == "none"].index
    rows = []
    for b in [c for c in ("central", "lobar", "segmental") if (burden == c).any()]:
        pos = burden.index[burden == b]
        r = stats.delong_ci(np.r_[np.zeros(len(neg)), np.ones(len(pos))],
                            np.r_[p.y_score[neg], p.y_score[pos]])  # fmt: skip
        vox = [int((clot[row[i]] > 0).sum()) for i in pos]
        hu = [float(np.median(PAPER_WINDOW.to_hu(ct[row[i]][clot[row[i]] > 0]))) for i in pos]
        rows.append({
            "burden": b, "PE patients": len(pos), "clot voxels, median": int(round(np.median(vox))),
            "clot voxel HU, median": int(round(np.median(hu))),
            "AUC vs no PE": f"{r.auc:.2f} ({r.lo:.2f}–{r.hi:.2f})",
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("burden")
