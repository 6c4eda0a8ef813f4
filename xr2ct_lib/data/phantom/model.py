"""The probability model of the simulated cohort: clot burden, signs, confounders, and what
each modality shows of them.

A patient's *state* is its clot burden class (``central``, ``lobar``, ``segmental``) with
PE, or ``none`` without. Given the state, every finding below is present independently with
the probability of :data:`FINDING_RATES`; contrast reflux occurs only with right-heart
strain. The images are drawn from these indicators (:mod:`.patient`), and an ideal reader
of a modality sees the indicators through that modality's :data:`OBSERVATIONS` map, which
makes its likelihood ratio, and so the ceiling of its AUC, exactly computable
(:mod:`xr2ct_lib.eval.ceilings`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

STATES = ("central", "lobar", "segmental", "none")
BURDEN_CLASSES = STATES[:3]
BURDEN_WEIGHTS = {"central": 0.35, "lobar": 0.45, "segmental": 0.20}

SIGNS = ("rv_strain", "pa_enlargement", "infarct", "effusion", "oligaemia")
CONFOUNDERS = ("lv_cardiomegaly", "pneumonia", "bilateral_effusion")
FINDINGS = SIGNS + CONFOUNDERS
# P(finding | state), in the order of STATES
FINDING_RATES = {
    "rv_strain": (0.55, 0.20, 0.05, 0.03),  # RV/LV > 1 (1.1–1.4), septum bowed
    "pa_enlargement": (0.40, 0.20, 0.10, 0.08),  # trunk +4–8 mm
    "infarct": (0.12, 0.30, 0.35, 0.02),  # pleural-based wedge consolidation
    "effusion": (0.25, 0.25, 0.20, 0.06),  # unilateral, 150–400 mL
    "oligaemia": (0.30, 0.15, 0.05, 0.04),  # Westermark: regional lucency (X-ray)
    "lv_cardiomegaly": (0.10, 0.10, 0.10, 0.15),  # LV enlarged, RV/LV < 1
    "pneumonia": (0.08, 0.08, 0.08, 0.18),  # lobar consolidation, air bronchograms
    "bilateral_effusion": (0.06, 0.06, 0.06, 0.12),  # heart failure, 150–400 mL each side
}
REFLUX_GIVEN_STRAIN = 0.5  # contrast reflux into the IVC (CT only)
CASTS = {"central": (1, 1), "lobar": (1, 3), "segmental": (1, 3)}  # number of clot casts


def draw_findings(rng: np.random.Generator, pe_label: int) -> dict:
    """Burden class and finding indicators of one patient.

    The same draws are made whatever the label (burden first, then one uniform per finding
    compared with its rate under the patient's state), so one seed gives the same geometry
    and nuisance parameters for ``pe_label`` 0 and 1.
    """
    if pe_label not in (0, 1):
        raise ValueError(f"pe_label must be 0 or 1, got {pe_label!r}")
    u_burden = rng.uniform()
    cum = np.cumsum([BURDEN_WEIGHTS[c] for c in BURDEN_CLASSES])
    burden = BURDEN_CLASSES[min(int(np.searchsorted(cum, u_burden, side="right")), 2)]
    state = burden if pe_label == 1 else "none"
    si = STATES.index(state)
    u = rng.uniform(size=len(FINDINGS) + 1)
    out = {"state": state, "burden": burden if pe_label == 1 else "none"}
    for i, f in enumerate(FINDINGS):
        out[f] = int(u[i] < FINDING_RATES[f][si])
    out["reflux"] = int(out["rv_strain"] and u[-1] < REFLUX_GIVEN_STRAIN)
    return out


def _effusion_sides(f: dict) -> int:
    return 2 if f["bilateral_effusion"] else int(f["effusion"])


def _xray(f: dict) -> tuple:
    return (
        int(f["rv_strain"] or f["lv_cardiomegaly"]),  # enlarged cardiac silhouette
        f["pa_enlargement"],  # enlarged pulmonary artery / hila
        int(f["infarct"] or f["pneumonia"]),  # airspace opacity
        _effusion_sides(f),  # pleural fluid: none, one side, both
        f["oligaemia"],  # regional lucency
    )


def _ct_signs(f: dict) -> tuple:
    return (
        f["rv_strain"], f["lv_cardiomegaly"], f["reflux"], f["pa_enlargement"],
        f["infarct"], f["pneumonia"], _effusion_sides(f),
    )  # fmt: skip


# What each reader sees of a patient's findings (a function of the indicators).
OBSERVATIONS: dict[str, tuple[str, Callable[[dict], tuple]]] = {
    "xray": (
        "X-ray: cardiac silhouette, PA/hila, opacity, effusion sides, lucency",
        _xray,
    ),
    "shared": (
        "shared: the X-ray findings a windowed CT can depict (no lung lucency)",
        lambda f: _xray(f)[:4],
    ),
    "ct_signs": (
        "CT indirect signs: RV vs LV, reflux, PA, infarct vs pneumonia, effusion sides",
        _ct_signs,
    ),
    "ct_central_lobar": (
        "CT signs + central and lobar clots (segmental clots unseen)",
        lambda f: _ct_signs(f) + (int(f["state"] in ("central", "lobar")),),
    ),
    "ct_all_clots": (
        "CT signs + every clot",
        lambda f: _ct_signs(f) + (int(f["state"] != "none"),),
    ),
}


def pattern_probabilities(observe: Callable[[dict], tuple]) -> dict[int, dict[tuple, float]]:
    """P(observation pattern | pe_label), exactly, by enumerating every state and finding
    combination of the model."""
    out: dict[int, dict[tuple, float]] = {0: {}, 1: {}}
    for si, state in enumerate(STATES):
        p_state = BURDEN_WEIGHTS.get(state, 1.0)
        y = int(state != "none")
        for bits in itertools.product((0, 1), repeat=len(FINDINGS) + 1):
            f = dict(zip(FINDINGS, bits[:-1], strict=True))
            f["reflux"], f["state"] = bits[-1], state
            p = p_state
            for name, b in zip(FINDINGS, bits[:-1], strict=True):
                r = FINDING_RATES[name][si]
                p *= r if b else 1.0 - r
            r = REFLUX_GIVEN_STRAIN if f["rv_strain"] else 0.0
            p *= r if f["reflux"] else 1.0 - r
            if p > 0:
                key = observe(f)
                out[y][key] = out[y].get(key, 0.0) + p
    return out
