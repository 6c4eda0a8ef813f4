"""A manifest validated whole: its table (:func:`~xr2ct_lib.data.manifest.check_table`) and
the image checks of every row, each file read whole, once, before long work starts.

A CT must be a readable, complete 3D volume in Hounsfield units with air in it (no air, no
lungs to crop to); a label map or clot mask must lie on the CT's voxel grid; an X-ray or DRR
must be a readable greyscale 2D image. Each failure is one :class:`Problem` naming the row,
the column and the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xr2ct_lib.data.io import (
    CT_SUFFIXES,
    CXR_SUFFIXES,
    DICOM_SUFFIXES,
    CTVolume,
    DataError,
    read_ct,
    read_cxr,
)
from xr2ct_lib.data.manifest import (
    IMAGE_COLUMNS,
    PHANTOM,
    ManifestError,
    Problem,
    check_table,
    read_manifest,
    resolve_path,
)
from xr2ct_lib.utils import progress

AIR_HU = -500.0  # a chest CT in HU has lung and outside air far below this


MIN_SIDE = {2: 8, 3: 8}  # the smallest X-ray (pixels) and CT (voxels) per axis a step takes


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _hu_problem(vol: CTVolume) -> str | None:
    lo, hi = float(vol.array.min()), float(vol.array.max())
    if lo <= AIR_HU:
        return None
    hint = " (stored without the −1024 HU offset?)" if lo >= 0 else ""
    return (
        f"values span {lo:g}…{hi:g} with no voxel below {AIR_HU:g} HU: not a chest CT in "
        f"Hounsfield units{hint}; the lungs (air) are needed for the crop"
    )


def _grid_problem(vol: CTVolume, ct: CTVolume, what: str) -> str | None:
    if vol.shape != ct.shape:
        return f"{what} has shape {vol.shape}, the CT {ct.shape}: not on the CT's voxel grid"
    if not np.allclose(vol.spacing, ct.spacing, rtol=1e-3):
        return f"{what} has spacing {vol.spacing} mm, the CT {ct.spacing} mm: not on one grid"
    if not np.allclose(vol.origin, ct.origin, atol=0.5 * min(ct.spacing)):
        return f"{what} has origin {vol.origin} mm, the CT {ct.origin} mm: not on one grid"
    if not np.allclose(vol.direction, ct.direction, atol=1e-3):
        return f"{what} has another orientation than the CT: not on one grid"
    return None


def _lung_problem(labels: CTVolume) -> str | None:
    from xr2ct_lib.data.preprocess import LUNG_LABELS

    if np.isin(labels.array, LUNG_LABELS).any():
        return None
    return (
        f"label map holds none of the lung-lobe labels {LUNG_LABELS} (TotalSegmentator "
        "'total' task); leave label_path empty to use the threshold lung segmentation"
    )


def row_file_problems(
    row: dict,
    index: int,
    manifest: Path,
    run_dir: Path | None,
    require_phantom_files: bool = False,
) -> list[Problem]:
    """Problems of one row's files (``index`` is the 1-based data row)."""
    source = str(row.get("source", "")).strip()
    pid = str(row.get("patient_id", "")).strip()
    problems: list[Problem] = []
    ct: CTVolume | None = None
    for column, ndim in IMAGE_COLUMNS.items():

        def bad(message: str, _c=column) -> None:
            problems.append(Problem(str(manifest), index, pid, _c, message))

        path = resolve_path(str(row.get(column, "")), source, manifest, run_dir)
        if path is None:
            continue
        if not path.exists():
            if source != PHANTOM or require_phantom_files:
                bad(f"file not found: {path}")
            continue
        suffix = _suffix(path)
        if ndim == 3 and suffix in CXR_SUFFIXES and suffix not in DICOM_SUFFIXES:
            bad(f"{path} is a 2D image; a CT volume must be 3D")
            continue
        if ndim == 2 and (path.is_dir() or (suffix in CT_SUFFIXES and suffix != ".dcm")):
            bad(f"{path} is a 3D volume format; a radiograph must be 2D")
            continue
        try:
            if ndim == 2:
                shape = read_cxr(path).shape
                if min(shape) < MIN_SIDE[2]:
                    bad(f"{path}: {shape[0]}×{shape[1]} pixels is too small for a radiograph "
                        f"(at least {MIN_SIDE[2]} per side)")  # fmt: skip
                continue
            vol = read_ct(path, dtype=None)
        except DataError as e:
            if "not a 3D volume" in e.problem:
                bad(f"{e} (a CT volume must be 3D)")
            else:
                bad(str(e))
            continue
        if column == "ct_path" and min(vol.shape) < MIN_SIDE[3]:
            ct, message = vol, (f"{'×'.join(map(str, vol.shape))} voxels is too small for a CT "
                                f"(at least {MIN_SIDE[3]} per axis)")  # fmt: skip
        elif column == "ct_path":
            ct, message = vol, _hu_problem(vol)
        elif ct is None:
            message = None  # no CT to compare with (its own problem is reported)
        else:
            kind = "label map" if column == "label_path" else "clot mask"
            message = _grid_problem(vol, ct, kind)
            if message is None and column == "label_path":
                message = _lung_problem(vol)
        if message:
            bad(f"{path}: {message}")
    return problems


def validate(
    manifest: str | Path,
    run_dir: str | Path | None = None,
    df: pd.DataFrame | None = None,
    check_files: bool = True,
    require_phantom_files: bool = False,
    n_folds: int = 6,
    phantom_files: bool = True,
    show_progress: bool = False,
) -> list[Problem]:
    """Every problem of the manifest, in row order; an empty list means valid.

    Every image is read whole, once (a truncated file, NaN voxels, a label map on another
    grid are found here, not hours later). Files of ``phantom`` rows are generated by
    ``xr2ct prepare``: while absent they are not an error unless ``require_phantom_files``;
    when present they are checked unless ``phantom_files=False``. Nothing is written.
    """
    manifest = Path(manifest)
    try:
        df = read_manifest(manifest) if df is None else df
    except ManifestError as e:
        return e.problems
    problems = check_table(df, str(manifest), n_folds)
    if not check_files or any(p.row is None for p in problems):
        return problems
    rows = list(enumerate(df.to_dict("records"), start=1))
    for i, r in progress(
        rows, desc="validate", unit="patient", **({} if show_progress else {"disable": True})
    ):
        is_phantom = r["source"] == PHANTOM
        if is_phantom and (run_dir is None or not phantom_files):
            continue  # generated files live in a run directory
        problems += row_file_problems(
            r, i, manifest, Path(run_dir) if run_dir else None, require_phantom_files
        )
    return sorted(problems, key=lambda p: p.row or 0)


def check(manifest: str | Path, run_dir: str | Path | None = None, **kwargs) -> pd.DataFrame:
    """Validate and return the manifest with typed columns; raise :class:`ManifestError`."""
    df = read_manifest(manifest)
    problems = validate(manifest, run_dir=run_dir, df=df, **kwargs)
    if problems:
        raise ManifestError(problems)
    df["pe_label"] = df["pe_label"].astype(float).astype(int)
    df["fold"] = df["fold"].astype(float).astype(int)
    return df
