"""One simulated patient: findings drawn from the model, drawn into the source anatomy,
deformed, measured, and rendered as a CT, a clean DRR and an iodine-free X-ray.

:func:`simulate_patient` is deterministic in the seed. Independent random streams (spawned
from it) drive the findings, the sign geometry, the clots, the anatomy, the nuisance
parameters (contrast timing, noise) and the rendering, so a seed gives the same anatomy
and nuisance parameters for ``pe_label`` 0 and 1, and nuisance never depends on the label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xr2ct_lib.data.drr import render_pair
from xr2ct_lib.data.phantom import signs as sg
from xr2ct_lib.data.phantom.clots import grow_clots
from xr2ct_lib.data.phantom.deform import draw_anatomy, sampling_grid, warp
from xr2ct_lib.data.phantom.heart import ventricle_widths
from xr2ct_lib.data.phantom.labels import AIR_HU, CODE, MAX_HU
from xr2ct_lib.data.phantom.model import CONFOUNDERS, SIGNS, draw_findings
from xr2ct_lib.data.phantom.vessels import trunk_diameter_mm

RV_LV_TARGET = (1.1, 1.4)  # right-heart strain
RV_GAIN = 1.3  # the free wall moves 1.5× the septum; the window and deformation lose some


@dataclass
class Patient:
    """One simulated patient (LPS arrays, see :mod:`.base`)."""

    ct_hu: np.ndarray  # float32 (D, H, W), contrast-enhanced CT with noise
    plain_hu: np.ndarray  # float32 (D, H, W), the same body without iodine (the X-ray's)
    labels: np.ndarray  # uint8, TotalSegmentator ids (lobes as in the source)
    findings: np.ndarray  # uint8, findings codes (labels.FINDINGS)
    clot_mask: np.ndarray  # uint8, clot index 1, 2, ... (0 = no clot)
    spacing_mm: float
    origin_lps: tuple[float, float, float]
    record: dict  # flat: indicators, measurements, nuisance parameters
    clots: list  # one dict per cast
    cxr: np.ndarray | None  # float32 (S, S) in [0, 1], degraded, unregistered, no iodine
    drr: np.ndarray | None  # float32 (S, S) in [0, 1], clean, canonical pose

    @property
    def vessel_mask(self) -> np.ndarray:
        """Pulmonary arteries (trunk and branches) after deformation, uint8."""
        return np.isin(self.findings, [CODE["pulmonary_trunk"], CODE["pulmonary_artery"]]).astype(
            np.uint8
        )

    @property
    def signs(self) -> dict:
        """The record (the name of phantom 1.x)."""
        return self.record


def measure(findings: np.ndarray, clot_mask: np.ndarray, base) -> dict:
    """Measurements of a patient's anatomy, from its findings map and clot mask (the files
    hold the same arrays, so the record can be checked against them)."""
    sp = base.spacing_mm
    ml = sp**3 / 1000.0
    rv, lv = ventricle_widths(findings, sp, base.plane)
    fluid = findings == CODE["effusion"]
    left = np.arange(findings.shape[2]) >= base.aux["view_center_zyx"][2]  # LPS: high x = left
    out = {
        "rv_diameter_mm": round(rv, 2), "lv_diameter_mm": round(lv, 2),
        "rv_lv_ratio": round(rv / lv, 4),
        "pa_diameter_mm": round(trunk_diameter_mm(findings == CODE["pulmonary_trunk"], sp), 2),
        "effusion_left_ml": round(float(fluid[..., left].sum()) * ml, 1),
        "effusion_right_ml": round(float(fluid[..., ~left].sum()) * ml, 1),
        "infarct_ml": round(float((findings == CODE["infarct"]).sum()) * ml, 1),
        "consolidation_ml": round(float((findings == CODE["consolidation"]).sum()) * ml, 1),
        "clot_voxels": int((clot_mask > 0).sum()),
        "clot_volume_ml": round(float((clot_mask > 0).sum()) * ml, 3),
    }  # fmt: skip
    out["effusion_ml"] = round(out["effusion_left_ml"] + out["effusion_right_ml"], 1)
    return out


def _clot_measures(clot_mask: np.ndarray, casts: list, sp: float) -> None:
    for k, c in enumerate(casts, start=1):
        m = clot_mask == k
        z = np.flatnonzero(m.any(axis=(1, 2)))
        c["voxels"] = int(m.sum())
        c["volume_ml"] = round(float(m.sum()) * sp**3 / 1000.0, 3)
        c["z_span_mm"] = round(float((z.max() - z.min() + 1) * sp), 1) if len(z) else 0.0


def _heart_params(rng: np.random.Generator, base, f: dict) -> tuple[dict | None, dict]:
    """Chamber enlargement (drawn whatever the indicators; RV strain wins over LV)."""
    target = rng.uniform(*RV_LV_TARGET)
    lv_septum, lv_wall = rng.uniform(2.0, 5.0), rng.uniform(10.0, 18.0)
    rv_d, lv_d = base.aux["ventricle_diameters"]
    septum = RV_GAIN * (target * lv_d - rv_d) / (2.5 + target)
    if f["rv_strain"]:
        h = {"enlarge": "rv", "septum_mm": septum, "wall_mm": 1.5 * septum}
        return h, {"rv_lv_target": round(float(target), 3)}
    if f["lv_cardiomegaly"]:
        return {"enlarge": "lv", "septum_mm": lv_septum, "wall_mm": lv_wall}, {}
    return None, {}


def _streams(seed: int) -> list[np.random.Generator]:
    """findings, sign geometry, clots, anatomy, nuisance, rendering."""
    return np.random.default_rng(int(seed)).spawn(6)


def findings_of(phantom_seed: int, pe_label: int) -> dict:
    """The burden class and finding indicators :func:`simulate_patient` draws for this seed
    and label, without simulating (to pick examples, or to check the model)."""
    return draw_findings(_streams(phantom_seed)[0], int(pe_label))


def simulate_patient(
    phantom_seed: int,
    pe_label: int,
    base,
    drr_size: int,
    *,
    min_clot_z_mm: float = 10.0,
    render: bool = True,
    contrast_scale: float | None = None,
) -> Patient:
    """A simulated patient, deterministic in ``phantom_seed`` (same seed → identical arrays).

    ``min_clot_z_mm``: every clot spans at least this in z (see :func:`.build.min_clot_z_mm`);
    ``render=False`` skips the radiographs; ``contrast_scale`` overrides the drawn bolus
    timing (for experiments; the X-ray does not depend on it).
    """
    seed = int(phantom_seed)
    r_find, r_sign, r_clot, r_anat, r_nuis, r_render = _streams(seed)
    f = draw_findings(r_find, int(pe_label))
    sp = base.spacing_mm
    w = sg.Work(
        plain=base.plain_hu.copy(), enh=base.enhancement.copy(), codes=base.codes.copy(),
        clots=np.zeros(base.shape, np.uint8),
    )  # fmt: skip
    sg.infarct(w, base, r_sign, bool(f["infarct"]))
    sg.pneumonia(w, base, r_sign, bool(f["pneumonia"]))
    sg.oligaemia(w, base, r_sign, bool(f["oligaemia"]))
    sg.effusions(w, base, r_sign, bool(f["effusion"]), bool(f["bilateral_effusion"]))
    sg.reflux(w, base, r_sign, bool(f["reflux"]))
    heart, heart_rec = _heart_params(r_sign, base, f)
    pa_delta = r_sign.uniform(4.0, 8.0)
    trunk_k = pa_delta / base.aux["trunk_diameter"] if f["pa_enlargement"] else 0.0
    casts = grow_clots(w, base, r_clot, f["burden"], min_clot_z_mm) if pe_label == 1 else []

    anatomy = draw_anatomy(r_anat)
    grid = sampling_grid(base, anatomy, heart, trunk_k)
    trunk = (w.codes == CODE["pulmonary_trunk"]).astype(np.float32)
    (plain, enh, trunk), (labels, findings, clots) = warp(
        grid, [w.plain - AIR_HU, w.enh, trunk], [base.labels, w.codes, w.clots]
    )
    # the trunk boundary follows the sub-voxel sampling (its diameter is measured)
    findings[(findings == CODE["pulmonary_trunk"]) & (trunk < 0.5) & (clots == 0)] = 0
    findings[trunk >= 0.5] = CODE["pulmonary_trunk"]
    plain += AIR_HU
    contrast = float(r_nuis.uniform(0.7, 1.25)) if contrast_scale is None else contrast_scale
    noise_sd = float(r_nuis.uniform(5.0, 20.0))
    noise = r_nuis.standard_normal(plain.shape, dtype=np.float32) * noise_sd
    ct = np.clip(plain + contrast * enh + noise, AIR_HU, MAX_HU).astype(np.float32)
    plain = np.clip(plain, AIR_HU, MAX_HU).astype(np.float32)

    _clot_measures(clots, casts, sp)
    record = {
        "phantom_seed": seed, "pe_label": int(pe_label), "burden": f["burden"],
        **{k: int(f[k]) for k in SIGNS + CONFOUNDERS + ("reflux",)},
        "n_clots": len(casts),
        "clot_min_z_span_mm": min((c["z_span_mm"] for c in casts), default=0.0),
        **measure(findings, clots, base),
        **heart_rec, **w.record,
        "pa_enlargement_mm": round(float(pa_delta), 2) if trunk_k else 0.0,
        "contrast_scale": round(contrast, 4), "noise_sd_hu": round(noise_sd, 2),
        **{f"rotation_{a}_deg": round(float(v), 3)
           for a, v in zip("xyz", anatomy["rotation_deg"], strict=True)},
        **{f"scale_{a}": round(float(v), 4) for a, v in zip("xyz", anatomy["scale"], strict=True)},
        **{f"translation_{a}_mm": round(float(v), 2)
           for a, v in zip("xyz", anatomy["translation_mm"], strict=True)},
        "elastic_mm": round(anatomy["elastic_mm"], 3),
    }  # fmt: skip
    drr = cxr = None
    if render:
        aux = base.aux
        drr, cxr, info = render_pair(
            ct, sp, int(drr_size), r_render, tuple(aux["view_center_zyx"]),
            float(aux["view_fov_mm"]), cxr_hu=plain,
        )  # fmt: skip
        for k, v in info.items():
            if isinstance(v, list | tuple):
                record.update({f"cxr_{k}_{i}": round(float(x), 4) for i, x in enumerate(v)})
            else:
                record[f"cxr_{k}"] = round(float(v), 4)
    return Patient(
        ct_hu=ct, plain_hu=plain, labels=labels, findings=findings, clot_mask=clots,
        spacing_mm=sp, origin_lps=base.origin_lps, record=record, clots=casts, cxr=cxr, drr=drr,
    )  # fmt: skip
