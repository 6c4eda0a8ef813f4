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
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from xr2ct_lib.config import Profile, RunConfig
from xr2ct_lib.data import manifest as mf
from xr2ct_lib.data import manifest_files
from xr2ct_lib.data.folds import fold_split
from xr2ct_lib.data.io import DataError
from xr2ct_lib.files import atomic_write_text, inside, write_safetensors
from xr2ct_lib.utils import progress

PREP_VERSION = 1


def _row_key(row: dict, cfg: RunConfig) -> str:
    p = cfg.profile
    payload = {
        "row": {k: str(v) for k, v in sorted(row.items())},
        "ct_size": p.ct_size,
        "reader_ct_size": p.reader_ct_size,
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
        reader_size=cfg.profile.reader_ct_size,
    )
    arrays = {
        "ct": np.asarray(out["ct"], np.float32),
        "lung": np.asarray(out["lung"], np.uint8),
        "clot": np.asarray(out["clot"], np.uint8)
        if "clot" in out
        else np.zeros(cfg.profile.ct_size, np.uint8),
        "cxr": preprocess_cxr(read_cxr(path("cxr_path")), cfg.profile.cxr_size),
    }
    if cfg.profile.reader_ct_size is not None:  # the clot reader's finer copy
        size = cfg.profile.reader_ct_size
        arrays["ct_reader"] = np.asarray(out["ct_reader"], np.float32)
        arrays["clot_reader"] = (np.asarray(out["clot_reader"], np.uint8) if "clot_reader" in out
                                 else np.zeros(size, np.uint8))  # fmt: skip
    if path("drr_path"):
        arrays["drr"] = preprocess_cxr(read_cxr(path("drr_path")), cfg.profile.cxr_size)
    return arrays


def _save_arrays(arrays: dict[str, np.ndarray], path: Path, key: str) -> None:
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    try:
        write_safetensors(path, tensors, metadata={"key": key})
    except OSError as e:
        raise DataError(path, f"cannot write ({e.strerror or e})") from e


def _row_problem(row: dict, row_no: int, cfg: RunConfig, e: Exception) -> mf.Problem:
    """The manifest row, column and file behind an error raised while preprocessing a row."""
    paths = {
        col: mf.resolve_path(str(row.get(col, "")), row["source"], cfg.manifest, cfg.run_dir)
        for col in mf.IMAGE_COLUMNS
    }
    if isinstance(e, DataError):
        column = next((c for c, p in paths.items() if p == e.path), "ct_path")
        message = str(e)
    else:  # preprocessing found the CT unusable (no lung, empty crop, ...)
        column, message = "ct_path", f"{paths['ct_path']}: preprocessing failed: {e}"
    pid = str(row["patient_id"])
    return mf.Problem(str(cfg.manifest), row_no, pid, column, message)


def _one_thread() -> None:
    import SimpleITK as sitk

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _preprocess_one(args) -> mf.Problem | None:
    """Preprocess and write one row; the problem (not an exception: it crosses processes)
    when the row's files cannot be used."""
    row, row_no, cfg, target, key = args
    try:
        _save_arrays(preprocess_row(row, cfg), target, key)
    except (DataError, ValueError, RuntimeError) as e:
        return _row_problem(row, row_no, cfg, e)
    return None


def prepare(
    cfg: RunConfig, workers: int | None = None, show_progress: bool = True
) -> PreparedCohort:
    """Validate the manifest, build the simulated patients, preprocess every patient.

    Bad rows stop the run before any long work, with every problem listed; a row that
    fails in preprocessing (a CT without lungs, ...) stops it naming that row and file.
    ``workers`` simulate and preprocess patients in parallel (default: one per CPU core, at
    most 4). Every file is written under a temporary name and renamed when complete.
    """
    if workers is None:
        workers = max(1, min(4, os.cpu_count() or 1))
    df = mf.read_manifest(cfg.manifest)
    # real patients' images are read whole now; phantom files once they are built
    problems = manifest_files.validate(
        cfg.manifest,
        run_dir=cfg.run_dir,
        df=df,
        phantom_files=False,
        show_progress=show_progress,
        n_folds=cfg.profile.n_folds,
    )
    if problems:
        raise mf.ManifestError(problems)
    for line in mf.unknown_columns(df, str(cfg.manifest)):
        print(f">> {line}", file=sys.stderr, flush=True)
    cfg.save()
    df["pe_label"] = df["pe_label"].astype(float).astype(int)
    df["fold"] = df["fold"].astype(float).astype(int)
    df["manifest_row"] = np.arange(1, len(df) + 1)
    n_rows = len(df)
    df = mf.select_for_profile(df, cfg.profile.max_patients, cfg.profile.n_folds)
    if len(df) < n_rows:  # said, never silent: the smoke profile caps the cohort
        print(f">> {cfg.manifest}: profile {cfg.profile.name} keeps {len(df)} of its {n_rows} "
              f"patients (max_patients {cfg.profile.max_patients}, balanced over folds and "
              "labels); the workshop and paper profiles keep all", file=sys.stderr,
              flush=True)  # fmt: skip
    row_numbers = df.pop("manifest_row").tolist()

    timings = {}
    t0 = time.perf_counter()
    phantom_rows = df[df["source"] == mf.PHANTOM]
    if len(phantom_rows):
        from xr2ct_lib.data.phantom import build_cohort

        records = build_cohort(cfg, phantom_rows, workers=workers)
        atomic_write_text(cfg.path("cohort", "records.csv"), records.to_csv(index=False))
    timings["cohort_s"] = time.perf_counter() - t0
    # the simulation wrote its files atomically; that they are all there is enough (reading
    # them whole again would add seconds to notebook 01: `xr2ct validate-manifest` does it)
    rows = df.to_dict("records")
    for row, row_no in zip(rows, row_numbers, strict=True):
        for col in mf.IMAGE_COLUMNS if row["source"] == mf.PHANTOM else ():
            path = mf.resolve_path(str(row.get(col, "")), mf.PHANTOM, cfg.manifest, cfg.run_dir)
            if path is not None and not path.exists():
                message = f"file not found: {path} (the simulation did not write it)"
                problems.append(
                    mf.Problem(str(cfg.manifest), row_no, row["patient_id"], col, message)
                )
    if problems:
        raise mf.ManifestError(problems)

    t1 = time.perf_counter()
    out_dir = cfg.path("prepared", "x").parent
    todo = []
    for row, row_no in zip(rows, row_numbers, strict=True):
        key = _row_key(row, cfg)
        target = inside(out_dir, f"{row['patient_id']}.safetensors")
        if not (target.exists() and _stored_key(target) == key):
            todo.append((row, row_no, cfg, target, key))
    bar = dict(total=len(todo), desc="preprocess", unit="patient")
    if not show_progress:  # else the XR2CT_NO_PROGRESS default of utils.progress holds
        bar["disable"] = True
    workers = max(1, min(int(workers), len(todo)))
    if workers == 1:
        failures = (_preprocess_one(args) for args in progress(todo, **bar))
        first = next((f for f in failures if f is not None), None)
    else:  # one thread per worker process: the volumes are small, the cores few
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread) as ex:
            results = list(progress(ex.map(_preprocess_one, todo), **bar))
        first = next((f for f in results if f is not None), None)
    if first is not None:
        raise mf.ManifestError([first])
    timings["preprocess_s"] = time.perf_counter() - t1
    index = df[["patient_id", "pe_label", "fold", "source"]]
    atomic_write_text(out_dir / "index.csv", index.to_csv(index=False))
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
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("key")
    except Exception:
        return None


def is_prepared(run_dir: str | Path) -> bool:
    """Whether :func:`prepare` wrote the cohort of ``run_dir`` (its ``prepared/index.csv``)."""
    return (Path(run_dir) / "prepared" / "index.csv").is_file()


@dataclass
class PreparedCohort:
    """Read access to the preprocessed tensors of one run.

    :meth:`load` keeps the ``cache_size`` most recently used patients in memory (a paper-size
    patient is ≈ 50 MB); :meth:`stack` reads one array of each patient from disk.
    """

    run_dir: Path
    cache_size: int = 32
    index: pd.DataFrame = field(init=False)
    _cache: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)

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

    def split(self, profile: Profile) -> dict[str, np.ndarray]:
        """The book's split: indices ``train``, ``val``, ``test`` of the profile's test fold."""
        return fold_split(self.folds, profile.test_fold, profile.n_folds)

    def split_ids(self, profile: Profile, part: str = "test") -> list[str]:
        """Patient ids of one part (``train``, ``val`` or ``test``) of :meth:`split`."""
        return [self.ids[i] for i in self.split(profile)[part]]

    def _file(self, patient_id: str) -> Path:
        return self.run_dir / "prepared" / f"{patient_id}.safetensors"

    def stored_key(self, patient_id: str) -> str | None:
        """The key a patient's file was prepared under (its row, the profile, the version)."""
        return _stored_key(self._file(patient_id))

    def load(self, patient_id: str) -> dict[str, np.ndarray]:
        """Every array of one patient (``ct``, ``lung``, ``clot``, ``cxr``, ``drr``; ``ct_reader``
        and ``clot_reader`` when the profile reads CT finer with the clot reader)."""
        if patient_id in self._cache:
            self._cache.move_to_end(patient_id)
            return self._cache[patient_id]
        arrays = {k: v.numpy() for k, v in load_file(str(self._file(patient_id))).items()}
        if self.cache_size > 0:
            self._cache[patient_id] = arrays
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return arrays

    def has(self, key: str) -> np.ndarray:
        """Which patients have the array ``key`` (e.g. ``drr``: real cohorts may have none)."""
        out = []
        for pid in self.ids:
            with safe_open(str(self._file(pid)), "np") as f:
                out.append(key in f.keys())
        return np.array(out, dtype=bool)

    def reader_keys(self, profile: Profile) -> tuple[str, str]:
        """The keys of the CT and clot masks at the clot reader's size
        (:attr:`Profile.reader_size`): ``ct_reader`` and ``clot_reader`` when the profile
        reads finer (raises if this run was prepared without them), else ``ct`` and ``clot``."""
        if profile.reader_ct_size is None:
            return "ct", "clot"
        missing = [p for p, ok in zip(self.ids, self.has("ct_reader"), strict=True) if not ok]
        if missing:
            raise FileNotFoundError(
                f"{self.run_dir / 'prepared'}: patients {missing[:3]} were prepared without the "
                f"clot reader's {profile.reader_ct_size} CT: run `xr2ct prepare` (or notebook 01)"
            )
        return "ct_reader", "clot_reader"

    def reader_volumes(self, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
        """(CT, clot masks) of every patient at the clot reader's size (:meth:`reader_keys`)."""
        ct, clot = self.reader_keys(profile)
        return self.stack(ct), self.stack(clot)

    def stack(self, key: str, indices=None) -> np.ndarray:
        """Stack one array over patients (all, or those at ``indices``), reading only that array."""
        ids = self.ids if indices is None else [self.ids[i] for i in indices]
        out = []
        for pid in ids:
            if pid in self._cache:
                out.append(self._cache[pid][key])
                continue
            with safe_open(str(self._file(pid)), "np") as f:
                out.append(f.get_tensor(key))
        return np.stack(out)


@dataclass
class ExamplePatient:
    """One patient read from its manifest row as the files are (before preprocessing):
    ``ct`` and ``labels`` (:class:`~xr2ct_lib.data.io.CTVolume`), the ``row`` and
    :meth:`path` of any of its files."""

    patient_id: str
    row: dict
    manifest: Path
    run_dir: Path
    ct: object = None
    labels: object = None

    def path(self, column: str) -> Path | None:
        """The file of ``column`` (``ct_path``, ``cxr_path``, ...), resolved as preparing does."""
        return mf.resolve_path(self.row[column], self.row["source"], self.manifest, self.run_dir)

    def describe(self) -> str:
        """One line: the CT's voxels, spacing and HU range."""
        a = self.ct.array
        return (f"{self.patient_id}: CT {a.shape} voxels of {np.round(self.ct.spacing, 2)} mm, "
                f"HU {a.min():.0f}…{a.max():.0f}")  # fmt: skip


def first_pe_patient(cfg: RunConfig, cohort: PreparedCohort, table: pd.DataFrame) -> ExamplePatient:
    """The cohort's first PE patient with its CT and label map read from ``table`` (the
    manifest): chapter 1's example."""
    from xr2ct_lib.data.io import read_ct

    rows = table.assign(pe_label=table.pe_label.astype(int)).set_index("patient_id")
    pid = next(p for p in cohort.ids if rows.loc[p, "pe_label"] == 1)
    ex = ExamplePatient(pid, rows.loc[pid].to_dict(), cfg.manifest, cfg.run_dir)
    ex.ct, ex.labels = read_ct(ex.path("ct_path")), read_ct(ex.path("label_path"))
    return ex


def cohort_records(cohort: PreparedCohort) -> pd.DataFrame:
    """The simulation's records (:func:`load_records`) of the cohort's simulated patients,
    in the cohort's order; empty for a cohort without simulated patients."""
    records = load_records(cohort.run_dir)
    return records.loc[[p for p in cohort.ids if p in records.index]]


def preparation_line(cfg: RunConfig, cohort: PreparedCohort, seconds: float) -> str:
    """One line: the patients ready and the seconds of simulating and preprocessing them."""
    timings = json.loads((cfg.run_dir / "prepared" / "timings.json").read_text())
    sim, pre = timings["cohort_s"], timings["preprocess_s"]
    return (f"{len(cohort)} patients ready in {seconds:.1f} s (simulation {sim:.1f} s, "
            f"preprocessing {pre:.1f} s)")  # fmt: skip
