"""The cohort's commands: ``validate-manifest`` (and ``--make-folds``) and ``prepare``."""

from __future__ import annotations

import sys
from pathlib import Path

from xr2ct_lib.cli.common import UserError, add_cohort, add_profile, default_run_dir, optional_path
from xr2ct_lib.config import PROFILES


def _validate(args) -> int:
    from xr2ct_lib.data import manifest as mf
    from xr2ct_lib.data import manifest_files

    manifest = optional_path(args.manifest, "the manifest")
    run_dir = optional_path(args.run_dir, "--run-dir") or default_run_dir(args.profile)
    if args.make_folds:
        return _make_folds(args, manifest, run_dir)
    problems = manifest_files.validate(
        manifest,
        run_dir=run_dir,
        require_phantom_files=args.require_files,
        show_progress=True,
    )
    if not any(p.row is None and p.column == "-" for p in problems):  # the file was read
        said = " ".join(p.message for p in problems)  # a missing column's typo is named there
        for line in mf.unknown_columns(mf.read_manifest(manifest), str(manifest)):
            if line.split("'")[1] not in said:
                print(line, file=sys.stderr)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {manifest}", file=sys.stderr)
        return 1
    n = len(mf.read_manifest(manifest))
    print(f"{manifest}: valid ({n} patients)")
    return 0


def _make_folds(args, manifest: Path, run_dir: Path) -> int:
    from xr2ct_lib.data import manifest as mf
    from xr2ct_lib.data import manifest_files
    from xr2ct_lib.files import atomic_write_text

    out = optional_path(args.make_folds, "--make-folds")
    if out.exists():
        raise UserError(f"{out}: exists; --make-folds writes a new manifest, give a new name")
    df = mf.read_manifest(manifest)
    n_folds = PROFILES[args.profile].n_folds
    problems = mf.check_table(df, str(manifest), n_folds, folds=False)
    if not problems:
        df = mf.make_folds(df, n_folds, args.folds_seed, str(manifest))
        problems = manifest_files.validate(manifest, run_dir=run_dir, df=df, show_progress=True)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {manifest}; {out} not written", file=sys.stderr)
        return 1
    atomic_write_text(out, mf.rebase_paths(df, manifest, out).to_csv(index=False))
    labels = df["pe_label"].astype(float).astype(int)
    counts = ", ".join(
        f"{k}: {len(g)} ({int(g.sum())} PE)" for k, g in labels.groupby(df["fold"], sort=True)
    )
    print(f"wrote {out}: {len(df)} patients in {n_folds} folds stratified by pe_label ({counts})")
    return 0


def _prepare(args) -> int:
    from xr2ct_lib.config import DEFAULT_MANIFEST, RunConfig, get_profile
    from xr2ct_lib.data.cohort import prepare

    manifest = optional_path(args.manifest, "--manifest") or DEFAULT_MANIFEST
    run_dir = optional_path(args.run_dir, "--run-dir")
    if run_dir is None:
        if manifest != DEFAULT_MANIFEST:
            raise UserError(
                f"give --run-dir for your own manifest (e.g. --run-dir runs/mine): the "
                f"default {default_run_dir(args.profile)} holds the embedded cohort"
            )
        run_dir = default_run_dir(args.profile)
    cfg = RunConfig(profile=get_profile(args.profile), manifest=manifest, run_dir=run_dir)
    cohort = prepare(cfg, workers=args.workers)
    from xr2ct_lib.data.manifest import read_manifest

    kept, rows = len(cohort), len(read_manifest(manifest))
    cap = f" of the manifest's {rows} (max_patients {cfg.profile.max_patients})"
    print(f"prepared {kept} patients{cap if rows > kept else ''} in {cfg.run_dir / 'prepared'}")
    return 0


def add_commands(sub, command) -> None:
    """Add validate-manifest and prepare; ``command(name, summary, description)`` makes one."""
    p = command(
        "validate-manifest",
        "check a manifest and every image it names",
        "Check a cohort manifest before any long work: columns, ids, labels, folds, and\n"
        "every image read whole (a truncated or unreadable file, NaN voxels, a CT without\n"
        "air, a label map on another grid, a colour or blank X-ray). Prints one line per\n"
        "problem (file, row, column) and exits 1 if there is any; writes nothing, unless\n"
        "--make-folds is given.",
    )
    p.add_argument("manifest", help="the manifest CSV (comma-separated, one row per patient)")
    add_profile(p)
    p.add_argument(
        "--run-dir",
        default=None,
        help="where phantom rows' generated files are (default: runs/<profile> in the repo)",
    )
    p.add_argument(
        "--require-files",
        action="store_true",
        help="phantom rows' files must exist too (after `xr2ct prepare`)",
    )
    p.add_argument(
        "--make-folds",
        metavar="NEW_CSV",
        default=None,
        help="assign stratified six-fold patient folds by pe_label and write the manifest "
        "with its fold column to NEW_CSV, a new file whose relative paths are rewritten for "
        "its folder (default: none, only check)",
    )
    p.add_argument("--folds-seed", type=int, default=0, help="shuffle seed of --make-folds")
    p.set_defaults(func=_validate)

    p = command(
        "prepare",
        "preprocess the cohort into a run folder",
        "Validate the manifest, simulate its phantom patients, and run the paper's CT and\n"
        "X-ray preprocessing on every patient into RUN_DIR/prepared (one safetensors file\n"
        "per patient, rebuilt only when its row or the profile changes).",
    )
    add_cohort(
        p,
        "output folder (default: runs/<profile> in the repo, for the embedded cohort; "
        "required with your own --manifest)",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="parallel workers (default: CPU cores, at most 4)"
    )
    p.set_defaults(func=_prepare)
