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
