"""Building the cohort's files: one patient per manifest row, in parallel, cached by sidecar.

Per patient (paths relative to the run directory, from the manifest): the CT (int16 HU),
the TotalSegmentator label map and the clot mask as NIfTI, the X-ray and the clean DRR as
16-bit PNG; next to the CT, ``<id>_findings.nii.gz`` (findings codes) and
``<id>_record.json`` (the sidecar: cache key, flat record, one entry per clot cast).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xr2ct_lib.data.phantom.base import GENERATOR_VERSION, load_base
from xr2ct_lib.data.phantom.patient import simulate_patient
from xr2ct_lib.files import atomic_write, atomic_write_text, write_nifti
from xr2ct_lib.utils import parallel_map

LUNG_CROP_Y_MM = 204.0  # the source's smallest lung-crop extent (anterior–posterior)
MAX_SPACING_MM = 4.0  # coarser loses the lobar arteries


def simulation_spacing_mm(profile) -> float:
    """Spacing the patients are simulated at: about the final voxel size after the lung crop
    and resize (its smallest side, rounded down to 0.5 mm), between the profile's CT spacing
    and 4 mm: workshop (64³) 3 mm, smoke (32³) 4 mm, paper 1 mm."""
    voxel = LUNG_CROP_Y_MM / profile.ct_size[1]
    return float(min(MAX_SPACING_MM, max(profile.ct_spacing_mm, np.floor(2 * voxel) / 2)))


def min_clot_z_mm(base, ct_depth: int) -> float:
    """Shortest z extent of a clot: 10 mm, and at least 2.5 slices of the preprocessed
    volume (lung crop over ``ct_depth`` slices), so both halves contain every clot."""
    return float(max(10.0, 2.5 * base.aux["lung_extent_mm"][0] / ct_depth))


def to_uint16(image01: np.ndarray) -> np.ndarray:
    """A [0, 1] float image as the 16-bit values :func:`write_png16` stores."""
    return np.round(np.clip(image01, 0.0, 1.0) * 65535).astype(np.uint16)


def write_png16(path: Path, image01: np.ndarray) -> None:
    """Write a [0, 1] float image as a 16-bit grayscale PNG."""
    from PIL import Image

    u16 = to_uint16(image01)
    atomic_write(path, lambda tmp: Image.fromarray(u16).save(tmp, format="PNG"), suffix=".png")


def read_png16(path: str | Path) -> np.ndarray:
    """Read a 16-bit PNG written by :func:`write_png16` back to float32 in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im, dtype=np.float32) / 65535.0


_PATH_COLUMNS = ("ct_path", "label_path", "clot_path", "cxr_path", "drr_path")
_REQUIRED = ("patient_id", "pe_label", "source", "phantom_seed") + _PATH_COLUMNS


def sidecar_path(run_dir: Path, row) -> Path:
    """``<patient_id>_record.json`` next to the patient's CT."""
    return Path(run_dir) / Path(row["ct_path"]).parent / f"{row['patient_id']}_record.json"


def findings_path(run_dir: Path, row) -> Path:
    """``<patient_id>_findings.nii.gz`` next to the patient's CT."""
    return Path(run_dir) / Path(row["ct_path"]).parent / f"{row['patient_id']}_findings.nii.gz"


def _key(row, spacing_mm: float, drr_size: int, min_z: float) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "patient_id": str(row["patient_id"]),
        "phantom_seed": int(row["phantom_seed"]),
        "pe_label": int(row["pe_label"]),
        "spacing_mm": float(spacing_mm),
        "drr_size": int(drr_size),
        "min_clot_z_mm": round(float(min_z), 3),
    }


def _validate_row(i, row) -> None:
    where = f"manifest row {i} (patient_id={row.get('patient_id')!r})"
    for c in _REQUIRED:
        if c not in row or pd.isna(row[c]):
            raise ValueError(f"{where}: missing value in column {c!r}")
    if float(row["pe_label"]) not in (0.0, 1.0):
        raise ValueError(f"{where}: pe_label must be 0 or 1, got {row['pe_label']!r}")
    if float(row["phantom_seed"]) != int(row["phantom_seed"]):
        raise ValueError(f"{where}: phantom_seed must be an integer, got {row['phantom_seed']!r}")
    for c in _PATH_COLUMNS:
        if Path(str(row[c])).is_absolute():
            raise ValueError(f"{where}: {c} must be relative to run_dir, got {row[c]!r}")


def _cached(run_dir: Path, row, key: dict) -> dict | None:
    side = sidecar_path(run_dir, row)
    files = [run_dir / row[c] for c in _PATH_COLUMNS] + [findings_path(run_dir, row)]
    if not side.exists() or not all(f.exists() for f in files):
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if any(data.get(k) != v for k, v in key.items()):
        return None
    return data["record"]


def build_patient(row: dict, run_dir: Path, spacing_mm: float, drr_size: int,
                  min_z: float, cache_dir=None) -> dict:  # fmt: skip
    """Simulate one manifest row and write its files (or reuse them); return its record."""
    run_dir = Path(run_dir)
    key = _key(row, spacing_mm, drr_size, min_z)
    cached = _cached(run_dir, row, key)
    if cached is not None:
        return cached
    base = load_base(float(spacing_mm), cache_dir)
    p = simulate_patient(int(row["phantom_seed"]), int(row["pe_label"]), base, int(drr_size),
                         min_clot_z_mm=min_z)  # fmt: skip
    sp, org = p.spacing_mm, p.origin_lps
    write_nifti(run_dir / row["ct_path"], np.round(p.ct_hu).astype(np.int16), sp, org)
    write_nifti(run_dir / row["label_path"], p.labels, sp, org)
    write_nifti(run_dir / row["clot_path"], (p.clot_mask > 0).astype(np.uint8), sp, org)
    write_nifti(findings_path(run_dir, row), p.findings, sp, org)
    write_png16(run_dir / row["cxr_path"], p.cxr)
    write_png16(run_dir / row["drr_path"], p.drr)
    record = {"patient_id": str(row["patient_id"]), **p.record}
    text = json.dumps({**key, "record": record, "clots": p.clots}, indent=1)
    atomic_write_text(sidecar_path(run_dir, row), text)
    return record


def _build_one(args) -> dict:
    return build_patient(*args)


def build_cohort(cfg, manifest: pd.DataFrame, workers: int = 1) -> pd.DataFrame:
    """Simulate and write every ``source == "phantom"`` row of ``manifest`` into ``cfg.run_dir``.

    A patient whose files exist and whose sidecar matches (generator version, seed, label,
    spacing, DRR size, clot extent) is skipped. Returns the cohort's records: one row per
    patient, flat columns (burden class, each sign and confounder, measurements, nuisance
    parameters); see :mod:`.patient`.
    """
    missing = [c for c in _REQUIRED if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    rows = manifest[manifest["source"] == "phantom"]
    for i, row in rows.iterrows():
        _validate_row(i, row)
    spacing = simulation_spacing_mm(cfg.profile)
    size = int(cfg.profile.drr_size)
    run_dir = Path(cfg.run_dir)
    cache_dir = run_dir / "cache"
    base = load_base(spacing, cache_dir)  # once, before forking workers
    min_z = min_clot_z_mm(base, cfg.profile.ct_size[0])
    records = [r.to_dict() for _, r in rows.iterrows()]
    todo = [r for r in records if _cached(run_dir, r, _key(r, spacing, size, min_z)) is None]
    workers = max(1, min(int(workers), len(todo) or 1))
    args = [(r, run_dir, spacing, size, min_z, cache_dir) for r in records]
    if workers == 1:
        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cores)))
    out = parallel_map(_build_one, args, workers, desc="phantom cohort", unit="patient")
    df = pd.DataFrame(out)
    df.insert(1, "findings_path", [str(findings_path(Path("."), r)) for r in records])
    return df
