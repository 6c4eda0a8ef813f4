"""``prepare``: manifest → (simulated) cohort → preprocessed tensors cached under the run dir.

Every patient's preprocessed arrays are one safetensors file
``<run_dir>/prepared/<patient_id>.safetensors`` with keys ``ct`` (D,H,W) in [−1, 1],
``lung`` and ``clot`` (D,H,W) uint8, ``cxr`` and (when present) ``drr`` (3,S,S) in [0, 1].
A file is rebuilt when its row, the profile or the preprocessing version changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from xr2ct_lib.config import RunConfig
from xr2ct_lib.data import manifest as mf
from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.utils import progress

PREP_VERSION = 1


def _row_key(row: dict, cfg: RunConfig) -> str:
    p = cfg.profile
    payload = {
        "row": {k: str(v) for k, v in sorted(row.items())},
        "ct_size": p.ct_size,
        "spacing": p.ct_spacing_mm,
        "cxr_size": p.cxr_size,
        "drr_size": p.drr_size,
        "version": PREP_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def preprocess_row(row: dict, cfg: RunConfig) -> dict[str, np.ndarray]:
    """Read one patient's files and run the paper's CT and CXR preprocessing."""
    from xr2ct_lib.data.io import read_ct, read_cxr
    from xr2ct_lib.data.preprocess import preprocess_ct, preprocess_cxr

    def path(col: str) -> Path | None:
        return mf.resolve_path(str(row.get(col, "")), row["source"], cfg.manifest, cfg.run_dir)

    ct = read_ct(path("ct_path"))
    labels = read_ct(path("label_path")) if path("label_path") else None
    masks = {"clot": read_ct(path("clot_path"))} if path("clot_path") else None
    out = preprocess_ct(
        ct,
        size=cfg.profile.ct_size,
        spacing_mm=cfg.profile.ct_spacing_mm,
        labels=labels,
        masks=masks,
    )
    arrays = {
        "ct": np.asarray(out["ct"], np.float32),
        "lung": np.asarray(out["lung"], np.uint8),
        "clot": np.asarray(out["clot"], np.uint8)
        if "clot" in out
        else np.zeros(cfg.profile.ct_size, np.uint8),
        "cxr": preprocess_cxr(read_cxr(path("cxr_path")), cfg.profile.cxr_size),
    }
    if path("drr_path"):
        arrays["drr"] = preprocess_cxr(read_cxr(path("drr_path")), cfg.profile.cxr_size)
    return arrays


def _save_arrays(arrays: dict[str, np.ndarray], path: Path, key: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    save_file(tensors, str(tmp), metadata={"key": key})
    tmp.replace(path)


def _one_thread() -> None:
    import SimpleITK as sitk

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _preprocess_one(args) -> None:
    row, cfg, target, key = args
    _save_arrays(preprocess_row(row, cfg), target, key)


def prepare(
    cfg: RunConfig, workers: int | None = None, show_progress: bool = True
) -> PreparedCohort:
    """Validate the manifest, build the simulated patients, preprocess every patient.

    Bad rows stop the run before any long work, with every problem listed. ``workers``
    simulate and preprocess patients in parallel (default: one per CPU core, at most 4).
    """
    if workers is None:
        workers = max(1, min(4, os.cpu_count() or 1))
    df = mf.read_manifest(cfg.manifest)
    problems = mf.validate(cfg.manifest, run_dir=cfg.run_dir, df=df)
    if problems:
        raise mf.ManifestError(problems)
    df["pe_label"] = df["pe_label"].astype(float).astype(int)
    df["fold"] = df["fold"].astype(float).astype(int)
    df = mf.select_for_profile(df, cfg.profile.max_patients, cfg.profile.n_folds)

    timings = {}
    t0 = time.perf_counter()
    phantom_rows = df[df["source"] == mf.PHANTOM]
    if len(phantom_rows):
        from xr2ct_lib.data.phantom import build_cohort

        records = build_cohort(cfg, phantom_rows, workers=workers)
        atomic_write_text(cfg.path("cohort", "records.csv"), records.to_csv(index=False))
    timings["cohort_s"] = time.perf_counter() - t0
    # the generated files are now checked like any real file
    problems = mf.validate(
        cfg.manifest, run_dir=cfg.run_dir, df=df.astype(str), require_phantom_files=True
    )
    if problems:
        raise mf.ManifestError(problems)

    t1 = time.perf_counter()
    out_dir = cfg.path("prepared", "x").parent
    todo = []
    for row in df.to_dict("records"):
        key = _row_key(row, cfg)
        target = out_dir / f"{row['patient_id']}.safetensors"
        if not (target.exists() and _stored_key(target) == key):
            todo.append((row, cfg, target, key))
    bar = dict(total=len(todo), desc="preprocess", unit="patient", disable=not show_progress)
    workers = max(1, min(int(workers), len(todo)))
    if workers == 1:
        for args in progress(todo, **bar):
            _preprocess_one(args)
    else:  # one thread per worker process: the volumes are small, the cores few
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread) as ex:
            list(progress(ex.map(_preprocess_one, todo), **bar))
    timings["preprocess_s"] = time.perf_counter() - t1
    index = df[["patient_id", "pe_label", "fold", "source"]]
    index.to_csv(out_dir / "index.csv", index=False)
    atomic_write_text(out_dir / "timings.json", json.dumps(timings, indent=2))
    return PreparedCohort(cfg.run_dir)


def load_records(run_dir: str | Path) -> pd.DataFrame:
    """The simulated patients' records (``cohort/records.csv``, written by :func:`prepare`)
    indexed by ``patient_id``: burden class, every sign and confounder (0/1), measurements
    (RV/LV ratio, PA diameter, effusion and clot volumes), nuisance parameters.

    Empty when the cohort holds no simulated patients.
    """
    f = Path(run_dir) / "cohort" / "records.csv"
    if not f.is_file():
        return pd.DataFrame(index=pd.Index([], name="patient_id"))
    return pd.read_csv(f, dtype={"patient_id": str}).set_index("patient_id")


def load_signs(run_dir: str | Path) -> pd.DataFrame:
    """The simulated patients' PE signs (0/1 columns ``phantom.SIGNS``) by ``patient_id``
    (a view of :func:`load_records`; confounders are in the records too).

    Empty when the cohort holds no simulated patients.
    """
    from xr2ct_lib.data.phantom import SIGNS

    rec = load_records(run_dir)
    if rec.empty:
        return pd.DataFrame(columns=list(SIGNS), index=pd.Index([], name="patient_id"))
    return rec[list(SIGNS)]


def _stored_key(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("key")
    except Exception:
        return None


@dataclass
class PreparedCohort:
    """Read access to the preprocessed tensors of one run."""

    run_dir: Path
    index: pd.DataFrame = field(init=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        f = self.run_dir / "prepared" / "index.csv"
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: run `xr2ct prepare` (or notebook 01) first")
        self.index = pd.read_csv(f, dtype={"patient_id": str})

    def __len__(self) -> int:
        return len(self.index)

    @property
    def ids(self) -> list[str]:
        return self.index["patient_id"].tolist()

    @property
    def labels(self) -> np.ndarray:
        return self.index["pe_label"].to_numpy(int)

    @property
    def folds(self) -> np.ndarray:
        return self.index["fold"].to_numpy(int)

    def load(self, patient_id: str) -> dict[str, np.ndarray]:
        if patient_id not in self._cache:
            t = load_file(str(self.run_dir / "prepared" / f"{patient_id}.safetensors"))
            self._cache[patient_id] = {k: v.numpy() for k, v in t.items()}
        return self._cache[patient_id]

    def stack(self, key: str, indices=None) -> np.ndarray:
        """Stack one array over patients (all, or those at ``indices``)."""
        ids = self.ids if indices is None else [self.ids[i] for i in indices]
        return np.stack([self.load(i)[key] for i in ids])
