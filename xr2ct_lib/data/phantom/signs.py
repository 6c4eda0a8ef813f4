"""Signs and confounders drawn into the source anatomy (before the patient's deformation).

Each function draws its geometry whether or not the finding is present, so a seed gives the
same draws for both labels; it writes into a :class:`Work` copy only when it is. Lesions
replace tissue in the unenhanced volume and clear the iodine there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from xr2ct_lib.data.phantom.labels import AIR_HU, CODE, LEFT_LOBES, LUNG_LOBES

LOBES = tuple(LUNG_LOBES)


@dataclass
class Work:
    """Mutable per-patient copies of the source arrays, in the source's space."""

    plain: np.ndarray  # HU without contrast
    enh: np.ndarray  # iodine enhancement, HU
    codes: np.ndarray  # findings map
    clots: np.ndarray  # uint8, clot index (1, 2, ...) per voxel
    record: dict = field(default_factory=dict)


def _texture(seed: int, shape, sd: float) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    t = ndi.gaussian_filter(noise, 1.0)
    return t * (sd / max(float(t.std()), 1e-6))


def _local_grid(center, reach: int, shape):
    box = tuple(
        slice(max(0, int(c) - reach), min(n, int(c) + reach + 1))
        for c, n in zip(center, shape, strict=True)
    )
    g = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), -1)
    return box, g


def _fill(w: Work, box, region: np.ndarray, hu: float, sd: float, seed: int, code: int):
    sub = w.plain[box]
    sub[region] = hu + _texture(seed, sub.shape, sd)[region]
    w.enh[box][region] = 0.0
    w.codes[box][region] = code


def infarct(w: Work, base, rng: np.random.Generator, on: bool) -> None:
    """Pulmonary infarct: a pleural-based wedge (apex toward the hilum), 25–45 mm, of
    consolidation at −20…+40 HU (it survives the −100…900 HU window), sparing the arteries."""
    aux, sp = base.aux, base.spacing_mm
    lobe = int(rng.choice(LOBES, p=[0.15, 0.3, 0.15, 0.1, 0.3]))
    pts = aux["pleural"][lobe]
    starts = pts[rng.integers(len(pts), size=4)].astype(float)
    length, half_angle = rng.uniform(25.0, 45.0), np.deg2rad(rng.uniform(25.0, 35.0))
    hu, seed = rng.uniform(-20.0, 40.0), int(rng.integers(2**31))
    if not on:
        return
    side = "left" if lobe in LEFT_LOBES else "right"
    for c in starts:  # the first pleural point whose wedge holds ≥ 5 mL of lung
        axis = aux["hilum"][side] - c
        axis /= np.linalg.norm(axis)
        box, g = _local_grid(c, int(np.ceil(length / sp)) + 1, w.plain.shape)
        r = (g - c) * sp
        along = r @ axis
        perp = np.sqrt(np.maximum((r * r).sum(-1) - along**2, 0))
        wedge = (along >= -sp) & (along <= length)
        wedge &= perp <= (length - along) * np.tan(half_angle)
        wedge &= np.isin(base.labels[box], LOBES) & ~base.arteries[box]
        if wedge.sum() * sp**3 >= 5000.0:
            break
    _fill(w, box, wedge, hu, 10.0, seed, CODE["infarct"])
    w.record["infarct_lobe"] = LUNG_LOBES[lobe]
    w.record["infarct_length_mm"] = round(float(length), 1)


def pneumonia(w: Work, base, rng: np.random.Generator, on: bool) -> None:
    """Pneumonia-like consolidation: the part of one lobe within 30–50 mm (irregular margin)
    of a point inside it (bounded by the fissures, not a pleural wedge), 20–50 HU, with air
    bronchograms (five one-voxel air tubes running from the hilum through it)."""
    aux, sp = base.aux, base.spacing_mm
    lobe = int(rng.choice(LOBES, p=[0.2, 0.3, 0.15, 0.1, 0.25]))
    idx = aux["lobe_idx"][lobe]
    c = np.array(np.unravel_index(idx[rng.integers(len(idx))], w.plain.shape), float)
    radius, hu, seed = rng.uniform(30.0, 50.0), rng.uniform(20.0, 50.0), int(rng.integers(2**31))
    targets = rng.normal(0.0, 0.5, size=(5, 3)) * radius / sp
    if not on:
        return
    side = "left" if lobe in LEFT_LOBES else "right"
    box, g = _local_grid(c, int(np.ceil(radius / sp)) + 1, w.plain.shape)
    dist = np.linalg.norm((g - c) * sp, axis=-1)
    rough = ndi.gaussian_filter(np.random.default_rng(seed + 1).standard_normal(dist.shape), 2.0)
    dist += 12.0 * rough / max(float(rough.std()), 1e-6)  # an irregular, patchy margin
    region = (dist <= radius) & (base.labels[box] == lobe)
    region &= ~base.arteries[box]
    _fill(w, box, region, hu, 8.0, seed, CODE["consolidation"])
    hil = aux["hilum"][side]
    start = np.array([s.start for s in box])
    for t in targets:  # air bronchograms: hilum → beyond a point of the consolidation
        end = c + t
        n = int(np.ceil(np.linalg.norm(end - hil))) * 2 + 2
        line = np.round(hil + np.linspace(0, 1.3, n)[:, None] * (end - hil)).astype(int) - start
        ok = np.all((line >= 0) & (line < region.shape), axis=1)
        line = line[ok]
        keep = region[tuple(line.T)]
        w.plain[box][tuple(line[keep].T)] = -850.0
    w.record["pneumonia_lobe"] = LUNG_LOBES[lobe]


def effusions(w: Work, base, rng: np.random.Generator, unilateral: bool, bilateral: bool):
    """Pleural fluid (0–20 HU) filling the dependent lung base: 150–400 mL on one side (the
    PE sign) and/or 150–400 mL on each side (the confounder); volumes add up per side."""
    aux, sp = base.aux, base.spacing_mm
    side = "left" if rng.uniform() < 0.5 else "right"
    vol_uni = rng.uniform(150.0, 400.0)
    vol_bi = rng.uniform(150.0, 400.0, size=2)
    hu = rng.uniform(0.0, 20.0)
    seed = int(rng.integers(2**31))
    volumes = {"left": 0.0, "right": 0.0}
    if bilateral:
        volumes["left"], volumes["right"] = float(vol_bi[0]), float(vol_bi[1])
    if unilateral:
        volumes[side] += float(vol_uni)
        w.record["effusion_side"] = side
    flat_p, flat_e, flat_c = w.plain.reshape(-1), w.enh.reshape(-1), w.codes.reshape(-1)
    for s, vol in volumes.items():
        if vol <= 0:
            continue
        order = aux[f"effusion_{s}"]
        sel = order[: min(len(order), int(round(vol * 1000.0 / sp**3)))]
        tex = np.random.default_rng(seed).normal(0.0, 4.0, size=len(sel)).astype(np.float32)
        flat_p[sel] = hu + tex
        flat_e[sel] = 0.0
        flat_c[sel] = CODE["effusion"]


def oligaemia(w: Work, base, rng: np.random.Generator, on: bool) -> None:
    """Westermark sign: one lobe loses small-vessel density and 40–80 HU of lung density.
    Lung HU lies below the CT window, so it shows on the X-ray, not the windowed CT."""
    lobe = int(rng.choice(LOBES))
    drop, keep = rng.uniform(40.0, 80.0), rng.uniform(0.2, 0.5)
    if not on:
        return
    idx = base.aux["lobe_idx"][lobe]
    flat = w.plain.reshape(-1)
    v = flat[idx]
    sel = w.codes.reshape(-1)[idx] == 0  # not where a lesion or fluid was drawn
    vessels = v > -750  # small unenhanced vessels / interstitium
    v = np.where(vessels, -860.0 + keep * (v + 860.0), v) - drop
    flat[idx[sel]] = np.maximum(v[sel], AIR_HU)
    w.record["oligaemia_lobe"] = LUNG_LOBES[lobe]


def reflux(w: Work, base, rng: np.random.Generator, on: bool) -> None:
    """Contrast reflux into the inferior vena cava (right-heart strain): its upper 30–80 mm
    enhanced by 150–350 HU (iodine, so the CT shows it and the X-ray does not)."""
    length, gain = rng.uniform(30.0, 80.0), rng.uniform(150.0, 350.0)
    ivc = base.aux["ivc"]
    if not on or len(ivc) == 0:
        return
    top = ivc[0, 0]
    sel = ivc[ivc[:, 0] >= top - length / base.spacing_mm]
    w.enh[tuple(sel.T)] = gain
    w.record["reflux_length_mm"] = round(float(length), 1)
