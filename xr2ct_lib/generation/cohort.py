"""``xr2ct generate --manifest M`` / ``--cxr-dir D``: one generated volume per patient.

Writes ``OUT/<patient_id>.nii.gz`` per patient and ``OUT/index.csv`` (patient, file, seed,
seconds, X-ray, sampler, steps, guidance, bundle fingerprint), rewritten atomically after
every volume, so a killed run leaves an index that matches its files. Re-running skips
every patient whose volume is in the index with the same X-ray content (sha256), bundle,
seed, sampler, steps and guidance, and still reads whole; any other is generated again.
Patient ``i`` (its row in the manifest, or its position in the folder sorted by name)
gets the seed :func:`~xr2ct_lib.generation.pipeline.noise_seed` ``(seed, i)``: the seed the
book gives the patient at that cohort position. Every X-ray is read and checked before
any network is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from xr2ct_lib.data.io import CXR_SUFFIXES, DataError, list_cxr_files
from xr2ct_lib.data.preprocess import read_and_preprocess_cxr
from xr2ct_lib.files import atomic_write_text, inside, sha256_file, write_nifti
from xr2ct_lib.generation.pipeline import noise_seed
from xr2ct_lib.generation.volume import (
    GenerateError,
    check_bundle_for_generation,
    check_finite,
    check_sampling,
    check_writable_folder,
    describe_bundle,
    load_pipeline,
    quiet,
    resolve_device,
)
from xr2ct_lib.models.bundle import fingerprint
from xr2ct_lib.utils import progress as progress_bar

INDEX = "index.csv"
INDEX_COLUMNS = (
    "patient_id",
    "file",
    "seed",
    "seconds",
    "cxr",
    "sampler",
    "steps",
    "guidance",
    "bundle",
    "cxr_sha256",
)


@dataclass
class Item:
    patient_id: str
    cxr: Path
    index: int  # position in the cohort: the seed's offset
    where: str  # for error messages: the manifest row, or the folder


def items_from_manifest(manifest: Path, run_dir: Path | None = None) -> list[Item]:
    """One item per manifest row (``patient_id``, ``cxr_path``); paths from its folder."""
    from xr2ct_lib.data import manifest as mf

    df = mf.read_manifest(manifest)
    for col in ("patient_id", "cxr_path"):
        if col not in df.columns:
            raise DataError(manifest, f"column={col}: required column missing")
    items, seen, problems = [], {}, []
    for i, row in enumerate(df.itertuples(index=False)):
        pid, where = str(row.patient_id).strip(), f"{manifest} row {i + 1}"
        source = getattr(row, "source", "")
        try:
            cxr = mf.resolve_path(row.cxr_path, source, manifest, run_dir)
        except ValueError:
            problems.append(
                f"{where} patient_id='{pid}': a phantom row; give --run-dir, the run "
                "folder `xr2ct prepare` simulated it into"
            )
            continue
        if not pid or cxr is None:
            problems.append(f"{where}: empty patient_id or cxr_path")
        elif unsafe := mf.id_problem(pid):
            problems.append(f"{where} column=patient_id: {unsafe}")
        elif pid.casefold() in seen:  # P01 and p01: one file on a case-insensitive disk
            first = seen[pid.casefold()] + 1
            problems.append(f"{where} patient_id='{pid}': duplicate patient (first in row {first})")
        else:
            seen[pid.casefold()] = i
            items.append(Item(pid, cxr, i, f"{where} patient_id='{pid}' column=cxr_path"))
    if problems:
        raise GenerateError("\n".join(problems))
    return items


def items_from_folder(folder: Path) -> list[Item]:
    """One item per X-ray file in ``folder`` (sorted by name; patient id: the name's stem)."""
    if not folder.is_dir():
        raise DataError(folder, "not a folder" if folder.exists() else "folder not found")
    files = list_cxr_files(folder)
    if not files:
        raise DataError(folder, f"no X-ray files ({', '.join(CXR_SUFFIXES)}) in this folder")
    items, seen = [], {}
    for i, f in enumerate(files):
        pid = f.name[: -len(f.suffix)]
        if pid.casefold() in seen:  # P01.png, P01.dcm, p01.png: one <id>.nii.gz
            other = seen[pid.casefold()].name
            raise DataError(f, f"patient {pid!r} has two X-rays ({other} too)")
        seen[pid.casefold()] = f
        items.append(Item(pid, f, i, str(f)))
    return items


def read_index(path: Path) -> pd.DataFrame:
    """A previous run's index (empty when there is none)."""
    if not path.is_file():
        return pd.DataFrame(columns=list(INDEX_COLUMNS))
    try:
        text = {c: str for c in ("patient_id", "bundle", "sampler", "cxr_sha256")}
        df = pd.read_csv(path, dtype=text)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(
            path,
            f"cannot be read as the index of earlier volumes ({e}); move it away to start again",
        ) from e
    if "cxr_sha256" not in df.columns:  # an older index: its volumes are generated again
        df["cxr_sha256"] = ""
    df["cxr_sha256"] = df["cxr_sha256"].fillna("").astype(str)
    if missing := [c for c in INDEX_COLUMNS if c not in df.columns]:
        raise DataError(
            path,
            f"not an xr2ct generate index (no column(s) {missing}); move it "
            "away or choose another --out-dir",
        )
    return df


def _reads(volume: Path) -> bool:
    """Whether a generated volume is there and reads whole (not truncated, not garbage)."""
    from xr2ct_lib.data.io import read_ct

    try:
        return volume.is_file() and read_ct(volume).array.size > 0
    except (OSError, ValueError, RuntimeError):  # DataError: truncated, corrupt, NaN voxels
        return False


def _is_done(previous: pd.DataFrame, out_dir: Path, row: dict) -> bool:
    same = previous[previous["patient_id"] == row["patient_id"]]
    for r in same.to_dict("records"):
        if (
            r["cxr_sha256"] == row["cxr_sha256"]  # the same X-ray, not just the same name
            and r["bundle"] == row["bundle"]
            and int(r["seed"]) == row["seed"]
            and r["sampler"] == row["sampler"]
            and int(r["steps"]) == row["steps"]
            and float(r["guidance"]) == row["guidance"]
            and _reads(out_dir / str(r["file"]))
        ):
            return True
    return False


@torch.no_grad()
def generate_cohort(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    manifest: str | Path | None = None,
    cxr_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    guidance_scale: float = 1.0,
    device: str | torch.device | None = None,
    allow_download: bool | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Generate every patient's volume (a manifest's or a folder's X-rays) into ``out_dir``.

    Returns the index (one row per patient of this cohort; ``seconds`` NaN when skipped).
    """
    log = log or quiet
    if (manifest is None) == (cxr_dir is None):
        raise GenerateError("give one of --manifest and --cxr-dir")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GenerateError(f"--out-dir {out_dir}: is a file; give a folder")
    check_writable_folder(out_dir, "--out-dir")
    dev = resolve_device(device)
    bundle, profile, timesteps = check_bundle_for_generation(checkpoint_dir)
    sampler, steps = check_sampling(profile, timesteps, sampler, steps, guidance_scale)
    items = (
        items_from_manifest(Path(manifest), Path(run_dir) if run_dir else None)
        if manifest is not None
        else items_from_folder(Path(cxr_dir))
    )
    index_file = out_dir / INDEX
    previous = read_index(index_file)
    key = fingerprint(bundle)
    log(f"{describe_bundle(bundle, profile)}; {sampler}, {steps} steps, seeds from {seed}")
    rows, todo, problems = [], [], []
    for it in progress_bar(items, desc="reading X-rays", disable=not progress, leave=False):
        try:  # every X-ray checked before any network is loaded
            inside(out_dir, f"{it.patient_id}.nii.gz")
            digest = sha256_file(it.cxr) if it.cxr.is_file() else ""
        except (OSError, ValueError) as e:
            problems.append(f"{it.where}: {e}")
            continue
        row = {
            "patient_id": it.patient_id,
            "file": f"{it.patient_id}.nii.gz",
            "seed": noise_seed(seed, it.index),
            "seconds": float("nan"),
            "cxr": str(it.cxr),
            "sampler": sampler,
            "steps": steps,
            "guidance": float(guidance_scale),
            "bundle": key,
            "cxr_sha256": digest,
        }
        rows.append(row)
        if digest and _is_done(previous, out_dir, row):
            continue
        try:
            todo.append((row, read_and_preprocess_cxr(it.cxr, profile.cxr_size)))
        except (OSError, ValueError) as e:  # the message names the file: once
            problems.append(str(e) if str(e).startswith(it.where) else f"{it.where}: {e}")
    if problems:
        raise GenerateError("\n".join(problems))
    log(f"{len(items)} patients: {len(items) - len(todo)} already generated, {len(todo)} to go")
    others = previous[~previous["patient_id"].isin([r["patient_id"] for r in rows])]
    if todo:
        pipe = load_pipeline(bundle, dev, allow_download, log)
        bar = progress_bar(
            todo, desc=f"generate ({sampler}, {steps} steps)", unit="volume", disable=not progress
        )
        for row, x in bar:
            t0 = time.perf_counter()
            out = pipe(
                x[None],
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                generator=torch.Generator().manual_seed(row["seed"]),
                sampler=sampler,
                output_type="hu",
            )
            volume = check_finite(out.volumes[0], bundle, guidance_scale)
            write_nifti(out_dir / row["file"], volume, (profile.ct_spacing_mm,) * 3)
            row["seconds"] = round(time.perf_counter() - t0, 3)
            _write_index(index_file, rows, others, previous)
    _write_index(index_file, rows, others, previous)
    return pd.DataFrame(rows, columns=list(INDEX_COLUMNS))


def _write_index(path: Path, rows: list[dict], others: pd.DataFrame, previous) -> None:
    """This cohort's generated rows (kept from ``previous`` when skipped) and other patients'."""
    done = []
    for r in rows:
        if r["seconds"] == r["seconds"]:  # generated in this run (not NaN)
            done.append(r)
        elif (path.parent / r["file"]).is_file() and _is_done(previous, path.parent, r):
            old = previous[previous["patient_id"] == r["patient_id"]].iloc[-1].to_dict()
            done.append({**r, "seconds": old["seconds"]})
    table = pd.concat([others, pd.DataFrame(done, columns=list(INDEX_COLUMNS))], ignore_index=True)
    atomic_write_text(path, table[list(INDEX_COLUMNS)].to_csv(index=False))
