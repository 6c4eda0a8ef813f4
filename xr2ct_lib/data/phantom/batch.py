"""Extra patients in memory, for pretraining classifiers (as the paper pretrains on RSPECT):
no files, the same preprocessing as the prepared cohort; X-rays only when asked for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xr2ct_lib.data.phantom.base import load_base
from xr2ct_lib.data.phantom.build import min_clot_z_mm, simulation_spacing_mm, to_uint16
from xr2ct_lib.data.phantom.labels import CODE
from xr2ct_lib.data.phantom.patient import simulate_patient
from xr2ct_lib.utils import progress


@dataclass
class CTBatch:
    """Preprocessed CTs of simulated patients (the profile's ``ct_size`` or the size asked)."""

    ct: np.ndarray  # float32 (N, D, H, W) in [−1, 1]
    clot: np.ndarray  # uint8 (N, D, H, W)
    arteries: np.ndarray  # uint8 (N, D, H, W), pulmonary trunk and arteries
    trunk: np.ndarray  # uint8 (N, D, H, W), pulmonary trunk and main pulmonary arteries
    casts: list  # per patient, one uint8 (D, H, W) mask per clot cast
    records: pd.DataFrame  # one row per patient (see :mod:`.patient`)
    cxr: np.ndarray | None = None  # float32 (N, 3, S, S) in [0, 1], with ``with_cxr``
    drr: np.ndarray | None = None  # float32 (N, 3, S, S) in [0, 1], with ``with_drr``


def simulate_ct_batch(
    seeds: Sequence[int],
    labels: Sequence[int],
    profile,
    cache_dir=None,
    show_progress: bool = False,
    with_cxr: bool = False,
    size: tuple[int, int, int] | None = None,
    with_drr: bool = False,
) -> CTBatch:
    """Simulate patients and preprocess them like ``xr2ct prepare`` does.

    Each CT is rounded to integer HU (as written to NIfTI by the cohort build) and goes
    through :func:`xr2ct_lib.data.preprocess.preprocess_ct` with its label map (the lung
    crop) and its masks; with ``with_cxr`` the X-ray is rendered at the profile's
    ``drr_size``, stored in 16 bits (as the cohort's PNG) and goes through
    :func:`~xr2ct_lib.data.preprocess.preprocess_cxr`; ``with_drr`` does the same for the
    clean registered DRR (the cohort's ``drr_path``). The same (seed, label) gives the
    same arrays as the cohort. ``size`` resizes the CT's lung crop to another (D, H, W) than
    the profile's ``ct_size`` (the clot reader's :attr:`~xr2ct_lib.config.Profile.reader_size`).
    """
    from xr2ct_lib.data.io import CTVolume
    from xr2ct_lib.data.preprocess import preprocess_ct, preprocess_cxr

    if len(seeds) != len(labels):
        raise ValueError(f"{len(seeds)} seeds for {len(labels)} labels")
    base = load_base(simulation_spacing_mm(profile), cache_dir)
    min_z = min_clot_z_mm(base, profile.ct_size[0])
    sp = (base.spacing_mm,) * 3
    cts, clots, arts, trunks, casts, recs, cxrs, drrs = [], [], [], [], [], [], [], []
    render = with_cxr or with_drr
    pairs = list(zip(seeds, labels, strict=True))
    for seed, label in progress(pairs, desc="CT-only patients", disable=not show_progress):
        p = simulate_patient(int(seed), int(label), base, profile.drr_size if render else 0,
                             min_clot_z_mm=min_z, render=render)  # fmt: skip
        for wanted, image, out in ((with_cxr, p.cxr, cxrs), (with_drr, p.drr, drrs)):
            if wanted:  # the cohort's 16-bit PNG, as read back
                out.append(preprocess_cxr(to_uint16(image).astype(np.float32), profile.cxr_size))

        def vol(a):
            return CTVolume(array=a, spacing=sp, origin=p.origin_lps)  # noqa: B023

        masks = {
            "clot": vol((p.clot_mask > 0).astype(np.uint8)),
            "arteries": vol(p.vessel_mask),
            "trunk": vol((p.findings == CODE["pulmonary_trunk"]).astype(np.uint8)),
            **{f"cast{k}": vol((p.clot_mask == k).astype(np.uint8))
               for k in range(1, len(p.clots) + 1)},
        }  # fmt: skip
        out = preprocess_ct(
            vol(np.round(p.ct_hu).astype(np.float32)), size=size or profile.ct_size,
            spacing_mm=profile.ct_spacing_mm, labels=vol(p.labels.astype(np.float32)),
            masks=masks,
        )  # fmt: skip
        cts.append(out["ct"])
        clots.append(out["clot"])
        arts.append(out["arteries"])
        trunks.append(out["trunk"])
        casts.append([out[f"cast{k}"] for k in range(1, len(p.clots) + 1)])
        recs.append(p.record)
    return CTBatch(
        ct=np.stack(cts).astype(np.float32), clot=np.stack(clots), arteries=np.stack(arts),
        trunk=np.stack(trunks), casts=casts, records=pd.DataFrame(recs),
        cxr=np.stack(cxrs).astype(np.float32) if with_cxr else None,
        drr=np.stack(drrs).astype(np.float32) if with_drr else None,
    )  # fmt: skip
