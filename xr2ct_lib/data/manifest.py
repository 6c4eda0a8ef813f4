"""The cohort manifest: one row per patient, validated before any long work starts.

Columns (``REQUIRED`` must be present, ``OPTIONAL`` may be empty):

- ``patient_id``: unique per patient;
- ``pe_label``: 0 or 1;
- ``fold``: 0–5, the patient's fold in the stratified six-fold cross-validation
  (:func:`make_folds` assigns them);
- ``source``: ``phantom`` for the embedded simulated cohort, or the real cohort's name;
- ``ct_path``, ``cxr_path``: the CT volume (NIfTI, MHA/MHD, NRRD, a DICOM file or a DICOM
  series folder) and the chest X-ray (DICOM, PNG, JPEG);
- ``drr_path``: a clean, registered DRR of the CT (optional for real cohorts);
- ``label_path``: a label map with TotalSegmentator lung ids 10–14 (optional);
- ``clot_path``: a clot mask (optional; the phantom writes one);
- ``phantom_seed``: for ``phantom`` rows, the seed that rebuilds the patient.

Paths of ``phantom`` rows are relative to the run directory (the files are generated
there by ``xr2ct prepare``); other paths are relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED = ("patient_id", "pe_label", "fold", "source", "ct_path", "cxr_path")
OPTIONAL = ("drr_path", "label_path", "clot_path", "phantom_seed")
IMAGE_COLUMNS = {"ct_path": 3, "cxr_path": 2, "drr_path": 2, "label_path": 3, "clot_path": 3}
PHANTOM = "phantom"
EXPECTED = f"expected a comma-separated CSV with the columns {','.join(REQUIRED)}"
# a patient id names files (<id>.nii.gz, <id>.safetensors): a safe file-name token
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SAFE_ID_RULE = (
    "a patient_id names the patient's files, so it must be 1-64 characters of letters, "
    "digits, '.', '_' and '-', starting with a letter or digit"
)


def id_problem(patient_id: str) -> str | None:
    """Why ``patient_id`` cannot name a file (a path, a formula, a space...), or None."""
    if SAFE_ID.fullmatch(patient_id):
        return None
    return f"unsafe patient_id {patient_id!r}: {SAFE_ID_RULE}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one manifest row (``row`` is the 1-based CSV data row)."""

    manifest: str
    row: int | None
    patient_id: str
    column: str
    message: str

    def __str__(self) -> str:
        where = [] if self.row is None else [f"row {self.row} (line {self.row + 1})"]
        where += [f"patient_id={self.patient_id!r}"] if self.row is not None else []
        where += [] if self.column == "-" else [f"column={self.column}"]
        return f"{self.manifest}: {' '.join(where)}{': ' if where else ''}{self.message}"


class ManifestError(ValueError):
    """Raised with every problem of a manifest, one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("invalid manifest:\n" + "\n".join(str(p) for p in problems))


def _format_problem(raw: bytes, text: str | None) -> str | None:
    """Name the format of a file that is not a comma-separated CSV, or None."""
    if raw[:4] == b"PK\x03\x04" or raw[:4] == b"\xd0\xcf\x11\xe0":
        return f"looks like an Excel workbook; save it as CSV (comma-separated): {EXPECTED}"
    if text is None:
        return None
    if not text.strip():
        return f"the file is empty; {EXPECTED}"
    if text.lstrip()[:1] in "[{":
        return f"looks like JSON; {EXPECTED}"
    header = text.lstrip().splitlines()[0]
    for sep, name in ((";", "';'-separated"), ("\t", "tab-separated"), ("|", "'|'-separated")):
        if header.count(sep) > header.count(","):
            return f"looks {name}; {EXPECTED}"
    return None


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read the CSV with every column as stripped text (validation parses the numbers).

    Raises :class:`ManifestError` for a missing file, a folder, or a file that is not a
    comma-separated UTF-8 CSV (JSON, ';'- or tab-separated, an Excel workbook, empty).
    """
    path = Path(path)

    def fail(message: str) -> ManifestError:
        return ManifestError([Problem(str(path), None, "", "-", message)])

    if path.is_dir():
        raise fail("is a folder; the manifest is one CSV file")
    if not path.is_file():
        raise fail("manifest file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        hint = _format_problem(raw, None) or f"not UTF-8 text ({e.reason} at byte {e.start})"
        raise fail(f"{hint}; save the manifest as a UTF-8 CSV") from None
    hint = _format_problem(raw, text)
    if hint:
        raise fail(hint)
    reader = csv.reader(io.StringIO(text))
    try:
        rows = list(reader)
    except csv.Error as e:  # e.g. a field over the csv module's limit (131072 characters)
        raise fail(f"line {reader.line_num}: {e}; {EXPECTED}") from None
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()  # trailing blank lines
    while not any(c.strip() for c in rows[0]):
        rows.pop(0)  # leading blank lines (the file is not empty: checked above)
    names = [c.strip() for c in rows[0]]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise fail(f"column(s) {dup} appear more than once in the header")
    message = "{} fields, the header has {} (a comma inside a value must be quoted)"
    long = [
        Problem(str(path), i, r[0].strip(), "-", message.format(len(r), len(names)))
        for i, r in enumerate(rows[1:], start=1)
        if len(r) > len(names)
    ]
    if long:
        raise ManifestError(long)
    body = [[c.strip() for c in r] + [""] * (len(names) - len(r)) for r in rows[1:]]
    df = pd.DataFrame(body, columns=names, dtype=str)
    for col in OPTIONAL:
        if col not in df.columns:
            df[col] = ""
    return df


def unknown_columns(df: pd.DataFrame, name: str) -> list[str]:
    """A warning per column xr2ct does not read (a misspelt ``clot_pth`` would be ignored)."""
    known = set(REQUIRED + OPTIONAL)
    out = []
    for c in df.columns:
        if c not in known:
            close = difflib.get_close_matches(c, sorted(known), n=1, cutoff=0.6)
            hint = f" (a typo of {close[0]!r}?)" if close else ""
            out.append(f"{name}: warning: column {c!r} is not one xr2ct reads{hint}; ignored")
    return out


def resolve_path(value: str, source: str, manifest: Path, run_dir: Path | None) -> Path | None:
    """Absolute path of a manifest path entry; None when the entry is empty."""
    value = str(value).strip()
    if not value:
        return None
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    if str(source).strip() == PHANTOM:
        if run_dir is None:
            raise ValueError("phantom rows need a run directory to resolve their paths")
        return Path(run_dir) / p
    return Path(manifest).parent / p


def _int_or_none(value: str) -> int | None:
    try:
        f = float(value)
    except ValueError:
        return None
    return int(f) if f.is_integer() else None


def _missing_column(name: str, column: str, columns) -> Problem:
    message = "required column missing"
    if column == "fold":
        message += (
            f"; to assign stratified folds run `xr2ct validate-manifest {name} "
            "--make-folds NEW.csv`"
        )
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    close = difflib.get_close_matches(column, unknown, n=1, cutoff=0.6)
    if close:
        message += f" (the header has {close[0]!r}: a typo?)"
    return Problem(name, None, "", column, message)


def check_table(df: pd.DataFrame, name: str, n_folds: int = 6, folds: bool = True):
    """The problems found without opening an image: columns, ids, labels, folds, sources.

    ``folds=False`` skips the fold column (for :func:`make_folds`).
    """
    required = [c for c in REQUIRED if folds or c != "fold"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        return [_missing_column(name, c, df.columns) for c in missing]
    if df.empty:
        return [Problem(name, None, "", "-", "no patient rows (the file holds only a header)")]
    df = df.fillna("").astype(str).apply(lambda col: col.str.strip())
    problems: list[Problem] = []
    folds_of: dict[str, set[int]] = {}
    first_row: dict[str, int] = {}
    seen: set[str] = set()
    for i, r in enumerate(df.to_dict("records"), start=1):
        pid = r["patient_id"]

        def bad(column: str, message: str, _i=i, _pid=pid) -> None:
            problems.append(Problem(name, _i, _pid, column, message))

        if not pid:
            bad("patient_id", "empty patient_id")
        elif unsafe := id_problem(pid):
            bad("patient_id", unsafe)
        if _int_or_none(r["pe_label"]) not in (0, 1):
            bad("pe_label", f"label must be 0 or 1, got {r['pe_label']!r}")
        fold = _int_or_none(r["fold"]) if folds else None
        if folds and (fold is None or not 0 <= fold < n_folds):
            bad("fold", f"fold must be an integer in 0–{n_folds - 1}, got {r['fold']!r}")
        key = pid.casefold()  # P01 and p01 are one file on a case-insensitive file system
        if pid and key in first_row:
            prev = folds_of.get(key, set())
            if fold is not None and prev and fold not in prev:
                where = f"{min(prev)} in row {first_row[key]}, {fold} here"
                bad("fold", f"patient is in two folds ({where})")
            else:
                case = "" if pid in seen else ", in another case: one file on some disks"
                bad("patient_id", f"duplicate patient (first in row {first_row[key]}{case})")
        elif pid:
            first_row[key] = i
        seen.add(pid)
        if fold is not None:
            folds_of.setdefault(key, set()).add(fold)
        if not r["source"]:
            bad("source", "empty source (use 'phantom' or the cohort's name)")
        if r["source"] == PHANTOM and _int_or_none(r.get("phantom_seed", "")) is None:
            got = r.get("phantom_seed", "")
            bad("phantom_seed", f"phantom rows need an integer phantom_seed, got {got!r}")
        for column in ("ct_path", "cxr_path"):
            if not r[column]:
                bad(column, "empty path")
    return problems


def make_folds(
    df: pd.DataFrame, n_folds: int = 6, seed: int = 0, name: str = "manifest"
) -> pd.DataFrame:
    """A copy of a valid manifest with stratified patient-level folds in ``fold``.

    Folds are stratified by ``pe_label`` (scikit-learn's ``StratifiedKFold``, shuffled with
    ``seed``); an existing ``fold`` column is replaced. Each label needs ``n_folds`` patients.
    """
    from xr2ct_lib.data.folds import make_stratified_folds

    labels = df["pe_label"].astype(float).astype(int).to_numpy()
    n_pos, n_neg = int(labels.sum()), int(len(labels) - labels.sum())
    if min(n_pos, n_neg) < n_folds:
        message = (
            f"{n_folds} stratified folds need at least {n_folds} patients of each label; "
            f"the manifest has {n_pos} with PE and {n_neg} without"
        )
        raise ManifestError([Problem(name, None, "", "pe_label", message)])
    out = df.copy()
    folds = make_stratified_folds(labels, n_folds=n_folds, seed=seed)
    if "fold" in out.columns:
        out["fold"] = folds
    else:
        out.insert(list(out.columns).index("pe_label") + 1, "fold", folds)
    return out


def rebase_paths(df: pd.DataFrame, old: str | Path, new: str | Path) -> pd.DataFrame:
    """Rewrite relative paths of non-phantom rows for a manifest saved at ``new``."""
    old_dir, new_dir = Path(old).resolve().parent, Path(new).resolve().parent
    out = df.copy()
    if old_dir == new_dir:
        return out
    for column in IMAGE_COLUMNS:
        if column not in out.columns:
            continue
        for i, (value, source) in enumerate(zip(out[column], out["source"], strict=True)):
            if value and source != PHANTOM and not Path(value).expanduser().is_absolute():
                out.iloc[i, out.columns.get_loc(column)] = os.path.relpath(old_dir / value, new_dir)
    return out


def select_for_profile(
    df: pd.DataFrame, max_patients: int | None, n_folds: int = 6
) -> pd.DataFrame:
    """A subset of at most ``max_patients`` rows, balanced over folds, keeping the PE share.

    The selection depends only on the manifest order, so it is the same on every machine.
    """
    if max_patients is None or len(df) <= max_patients:
        return df.reset_index(drop=True)
    per_fold = max(2, max_patients // n_folds)
    prevalence = df["pe_label"].astype(int).mean()
    n_pos = max(1, int(round(per_fold * prevalence)))
    parts = []
    for _, g in df.groupby(df["fold"].astype(int), sort=True):
        pos = g[g["pe_label"].astype(int) == 1].head(n_pos)
        neg = g[g["pe_label"].astype(int) == 0].head(per_fold - len(pos))
        parts.append(pd.concat([pos, neg]))
    out = pd.concat(parts)
    return df.loc[sorted(out.index)].reset_index(drop=True)


def make_phantom_manifest(
    n_patients: int = 120, prevalence: float = 0.34, n_folds: int = 6, seed: int = 2024
) -> pd.DataFrame:
    """The embedded cohort's manifest: simulated patients with stratified folds."""
    from xr2ct_lib.data.folds import make_stratified_folds

    rng = np.random.default_rng(seed)
    n_pos = int(round(n_patients * prevalence))
    labels = np.array([1] * n_pos + [0] * (n_patients - n_pos))
    rng.shuffle(labels)
    folds = make_stratified_folds(labels, n_folds=n_folds, seed=seed)
    seeds = rng.choice(2**31 - 1, size=n_patients, replace=False)
    rows = []
    for i in range(n_patients):
        pid = f"PH{i + 1:04d}"
        rows.append(
            {
                "patient_id": pid,
                "pe_label": int(labels[i]),
                "fold": int(folds[i]),
                "source": PHANTOM,
                "ct_path": f"cohort/{pid}_ct.nii.gz",
                "cxr_path": f"cohort/{pid}_cxr.png",
                "drr_path": f"cohort/{pid}_drr.png",
                "label_path": f"cohort/{pid}_labels.nii.gz",
                "clot_path": f"cohort/{pid}_clot.nii.gz",
                "phantom_seed": int(seeds[i]),
            }
        )
    return pd.DataFrame(rows)
