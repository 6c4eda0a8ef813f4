"""The xr2ct command line.

Every command reports a user's mistake (a bad manifest row, an unreadable file, a full disk)
as one line naming the file and the problem, exits non-zero, and leaves no partial file;
``xr2ct --debug COMMAND ...`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from xr2ct_lib import __version__
from xr2ct_lib.config import PROFILES, SCHEDULES, WEIGHTS

DESCRIPTION = """\
xr2ct: the X-ray2CTPA book's command line. A 3D latent diffusion model turns one chest
X-ray into a CT pulmonary angiogram; these commands take a cohort (a manifest CSV, one row
per patient) from its files to trained models and generated volumes.

Paths given on the command line are taken from the current directory; paths inside a
manifest are taken from the manifest's folder."""

EPILOG = """\
Run `xr2ct COMMAND --help` for a command's options and defaults.
Your own cohort, step by step: README.md, section "Bring your own cohort"."""

# the order a user needs the commands in; commands added elsewhere follow in any order
COMMAND_ORDER = (
    "validate-manifest",
    "prepare",
    "train",
    "add-stages",
    "generate",
    "run-notebooks",
    "reader-kit",
    "reader-score",
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks; adds '(default: ...)' to options that have one."""

    def __init__(self, prog, indent_increment=2, max_help_position=28, width=None):
        super().__init__(prog, indent_increment, max_help_position, width)

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):  # count the commands' indent too
            longest = max((len(a.dest) for a in action._choices_actions), default=0)
            indent = self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest + indent)

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "%(default)" in text
            or "default:" in text
            or not action.option_strings
            or any(action.default is v for v in (None, False, argparse.SUPPRESS))
        ):
            return text
        return f"{text} (default: %(default)s)"


class UserError(Exception):
    """A mistake in how a command was called, reported as one line."""


def _default_run_dir(profile: str) -> Path:
    from xr2ct_lib.config import REPO_ROOT

    return REPO_ROOT / "runs" / profile


def _path(value: str | None) -> Path | None:
    """A path from the command line: from the current directory, ``~`` expanded."""
    return Path(value).expanduser().resolve() if value else None


# ------------------------------------------------------------------ validate-manifest


def _validate(args) -> int:
    from xr2ct_lib.data import manifest as mf

    manifest = _path(args.manifest)
    run_dir = _path(args.run_dir) or _default_run_dir(args.profile)
    if args.make_folds:
        return _make_folds(args, manifest, run_dir)
    problems = mf.validate(
        manifest,
        run_dir=run_dir,
        require_phantom_files=args.require_files,
        show_progress=True,
    )
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
    from xr2ct_lib.files import atomic_write_text

    out = _path(args.make_folds)
    if out.exists():
        raise UserError(f"{out}: exists; --make-folds writes a new manifest, give a new name")
    df = mf.read_manifest(manifest)
    n_folds = PROFILES[args.profile].n_folds
    problems = mf.check_table(df, str(manifest), n_folds, folds=False)
    if not problems:
        df = mf.make_folds(df, n_folds, args.folds_seed, str(manifest))
        problems = mf.validate(manifest, run_dir=run_dir, df=df, show_progress=True)
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


# ------------------------------------------------------------------------------ prepare


def _prepare(args) -> int:
    from xr2ct_lib.config import DEFAULT_MANIFEST, RunConfig, get_profile
    from xr2ct_lib.data.cohort import prepare

    manifest = _path(args.manifest) or DEFAULT_MANIFEST
    run_dir = _path(args.run_dir)
    if run_dir is None:
        if manifest != DEFAULT_MANIFEST:
            raise UserError(
                f"give --run-dir for your own manifest (e.g. --run-dir runs/mine): the "
                f"default {_default_run_dir(args.profile)} holds the embedded cohort"
            )
        run_dir = _default_run_dir(args.profile)
    cfg = RunConfig(profile=get_profile(args.profile), manifest=manifest, run_dir=run_dir)
    cohort = prepare(cfg, workers=args.workers)
    print(f"prepared {len(cohort)} patients in {cfg.run_dir / 'prepared'}")
    return 0


# ------------------------------------------------------------------------ run-notebooks


def _notebooks(args) -> int:
    from xr2ct_lib.book import run_all

    run_all(
        args.profile, args.manifest, args.run_dir, args.seed, only=args.only, weights=args.weights
    )
    return 0


def _generate(args) -> int:
    cohort = args.manifest is not None or args.cxr_dir is not None
    if args.manifest is not None and args.cxr_dir is not None:
        raise UserError("give --manifest or --cxr-dir, not both")
    if cohort and (args.cxr is not None or args.out is not None):
        raise UserError(
            "--cxr/--out generate one X-ray; --manifest/--cxr-dir a cohort into "
            "--out-dir: give one kind"
        )
    if not cohort and (args.cxr is None or args.out is None):
        raise UserError(
            "give --cxr FILE --out FILE.nii.gz (one X-ray), or --manifest CSV / "
            "--cxr-dir FOLDER with --out-dir FOLDER (a cohort)"
        )
    if cohort and args.lora is not None:
        raise UserError("--lora applies to one X-ray (--cxr FILE --out FILE.nii.gz)")
    if cohort and args.out_dir is None:
        raise UserError("a cohort needs --out-dir FOLDER (one NIfTI per patient + index.csv)")
    if not cohort and args.out_dir is not None:
        raise UserError(
            "--out-dir is for a cohort (--manifest or --cxr-dir); one X-ray "
            "goes to --out FILE.nii.gz"
        )
    log = _say if not args.quiet else None
    if log:
        log("starting (PyTorch and diffusers take a few seconds to import)")
    from xr2ct_lib.generate import generate_volume

    common = dict(
        checkpoint_dir=_path(args.checkpoint),
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        guidance_scale=args.guidance,
        device=args.device,
        allow_download=args.allow_download or None,
        log=log,
    )
    if not cohort:
        out = generate_volume(
            cxr_path=_path(args.cxr), out_path=_path(args.out), lora=_path(args.lora), **common
        )
        print(f"wrote {out}")
        return 0
    from xr2ct_lib.generate_cohort import generate_cohort

    out_dir = _path(args.out_dir)
    index = generate_cohort(
        out_dir=out_dir,
        manifest=_path(args.manifest),
        cxr_dir=_path(args.cxr_dir),
        run_dir=_path(args.run_dir),
        **common,
    )
    made = int(index["seconds"].notna().sum())
    print(
        f"wrote {made} volume(s) to {out_dir} ({len(index) - made} already there); index: "
        f"{out_dir / 'index.csv'}"
    )
    return 0


def _say(msg: str) -> None:
    print(f">> {msg}", file=sys.stderr, flush=True)


def _train(args) -> int:
    from xr2ct_lib.config import DEFAULT_MANIFEST

    manifest = _path(args.manifest)
    run_dir, out = _path(args.run_dir), _path(args.out)
    if manifest is not None and manifest != DEFAULT_MANIFEST:
        if run_dir is None:
            raise UserError(
                "give --run-dir for your own manifest (e.g. --run-dir runs/mine): "
                "the default work folder holds the embedded cohort's training"
            )
        out = out or run_dir / "bundle"  # never over the shipped weights/<profile>
    from xr2ct_lib.train.bundle import parse_stages, train_bundle

    try:
        stages = parse_stages(args.stages)
    except ValueError as e:
        raise UserError(str(e)) from None
    out = train_bundle(
        profile=args.profile,
        schedule=args.schedule,
        out=out,
        work_dir=run_dir,
        manifest=manifest,
        seed=args.seed,
        ckpt_every=args.ckpt_every,
        command="xr2ct " + " ".join(sys.argv[1:]),
        stages=stages,
    )
    return 0


def _add_stages(args) -> int:
    from xr2ct_lib.models.stages import add_stages

    src = args.work_dir if args.work_dir is not None else args.recipe_dir
    entries = add_stages(args.bundle, src, tuple(args.stages))
    for stage, e in entries.items():
        print(f"{args.bundle}/stages/{stage}: {e['steps']} steps, {e['dtype']}, "
              f"sha256 {e['sha256'][:12]}… from {e['source']}")  # fmt: skip
    return 0


def _reader_kit(args) -> int:
    import time

    from xr2ct_lib.reader.kit import kit_from_run
    from xr2ct_lib.reader.select import KitInputError

    t0 = time.perf_counter()
    try:
        info = kit_from_run(
            args.run_dir,
            args.out,
            seed=args.seed,
            n_per_class=args.cases_per_class,
            n_realism=args.volumes_per_kind,
        )
    except (KitInputError, FileNotFoundError, FileExistsError, KeyError, ValueError) as e:
        print(f"reader-kit: {e}", file=sys.stderr)
        return 1
    for note in info.notes:
        print(f"note: {note}")
    counts = ", ".join(f"{v} {k}" for k, v in info.counts.items())
    print(
        f"wrote {info.path} (kit {info.kit_id}: {counts}; index.html "
        f"{info.html_bytes / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s"
    )
    print(f"answer key: {info.key_path} (keep it away from the participants)")
    return 0


def _reader_score(args) -> int:
    import pandas as pd

    from xr2ct_lib.files import atomic_write_text
    from xr2ct_lib.reader.score import score_files

    try:
        s = score_files(args.kit, args.responses, args.key)
    except (ValueError, FileNotFoundError) as e:
        print(f"reader-score: {e}", file=sys.stderr)
        return 1
    tables = {"table6_pe": s.pe, "phase_comparison": s.comparison, "real_or_generated": s.realism}
    titles = {
        "table6_pe": "PE categorisation per reader and phase (Table 6)",
        "phase_comparison": "Phase 1 vs phase 2 on the same cases (exact McNemar)",
        "real_or_generated": "Real or generated? (exact binomial test vs 0.5) and mean "
        "Likert ratings (1-5)",
    }
    with pd.option_context("display.width", 160, "display.max_columns", 30, "display.precision", 3):
        for name, df in tables.items():
            if not df.empty:
                print(f"\n{titles[name]}\n{df.to_string(float_format=lambda v: f'{v:.3g}')}")
    for note in s.notes:
        print(f"note: {note}")
    if args.out:
        for name, df in tables.items():
            if not df.empty:
                atomic_write_text(Path(args.out) / f"{name}.csv", df.to_csv())
        print(f"\nwrote the tables to {args.out}")
    return 0


# ---------------------------------------------------------------------------- parser


def _add_profile(p) -> None:
    p.add_argument(
        "--profile",
        default="workshop",
        choices=sorted(PROFILES),
        help="sizes and budgets: smoke (CI), workshop (a laptop), paper (a GPU)",
    )


def _add_cohort(p, run_dir_help: str) -> None:
    """--manifest, --profile and --run-dir, as every command on a cohort takes them."""
    p.add_argument(
        "--manifest", default=None, help="cohort manifest CSV (default: the embedded cohort)"
    )
    _add_profile(p)
    p.add_argument("--run-dir", default=None, help=run_dir_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xr2ct", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"xr2ct {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (or XR2CT_DEBUG=1)"
    )
    sub = parser.add_subparsers(
        dest="command", title="commands (in the order a new cohort needs them)", metavar="COMMAND"
    )
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error")  # fmt: skip

    def command(name: str, summary: str, description: str):
        return sub.add_parser(
            name,
            help=summary,
            description=description,
            formatter_class=HelpFormatter,
            parents=[debug],
        )

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
    _add_profile(p)
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
    _add_cohort(
        p,
        "output folder (default: runs/<profile> in the repo, for the embedded cohort; "
        "required with your own --manifest)",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="parallel workers (default: CPU cores, at most 4)"
    )
    p.set_defaults(func=_prepare)

    p = command(
        "run-notebooks",
        "execute the notebooks into book/executed (or RUN_DIR/executed)",
        "Execute the numbered notebooks in order with papermill (parameters profile,\n"
        "manifest, run_dir, seed) into book/executed/, or into RUN_DIR/executed/ when\n"
        "--run-dir is given (your own cohort: the book's chapters are left as they are).\n"
        "The notebooks use the bundle `xr2ct train` wrote to RUN_DIR/bundle when there is\n"
        "one (else weights/<profile>).",
    )
    _add_cohort(p, "run folder (default: runs/<profile>)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step")
    p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02 (default: all)")
    p.add_argument(
        "--weights",
        choices=list(WEIGHTS),
        default=None,
        help="networks of chapters 4 on: the shipped bundle weights/<profile> (the notebooks' "
        "default when not given) or the ones this run trains live",
    )
    p.set_defaults(func=_notebooks)

    p = command(
        "train",
        "train a generation bundle from scratch (VAE, CXR encoder, diffusion)",
        "Train every network of a generation bundle with the profile's schedule on folds\n"
        "2-5 (folds 0 and 1 held out) and write it with its provenance: the VAE, the CXR\n"
        "encoder, then the diffusion stages unconditional -> DRR -> X-ray. Rerun the same\n"
        "command to resume a killed run. `make weights` calls this. Several GPUs (or CPU\n"
        "processes): `accelerate launch --multi_gpu --num_processes N -m xr2ct_lib.cli\n"
        "train ...` (after `accelerate config`; bf16 on GPUs that support it); resume\n"
        "with the same number of processes.",
    )
    _add_cohort(
        p, "work folder for the cohort and checkpoints (default: runs/weights-<profile>-<schedule>)"
    )
    p.add_argument(
        "--schedule",
        default="long",
        choices=list(SCHEDULES),
        help="short: the book's live run; long: the shipped bundle",
    )
    p.add_argument(
        "--out",
        default=None,
        help="bundle folder (default: weights/<profile>; RUN_DIR/bundle for your own manifest)",
    )
    p.add_argument(
        "--stages",
        default="auto",
        help="diffusion stages to train, comma-separated from uncond,drr,cxr; auto: all "
        "three, or uncond,cxr when the cohort has no DRRs",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random step")
    p.add_argument(
        "--ckpt-every", type=int, default=200, help="diffusion checkpoint interval (steps)"
    )
    p.set_defaults(func=_train)

    p = command(
        "add-stages",
        "add stage checkpoints to a trained bundle from its work dir",
        "Copy the EMA denoisers at the end of the unconditional (and DRR) stages of a "
        "finished `xr2ct train` run into its bundle (stages/, float16, recorded in "
        "provenance.json); chapter 10 branches its ablations from them. No retraining.",
    )
    p.add_argument("bundle", type=Path, help="the bundle folder, e.g. weights/workshop")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--work-dir", type=Path, default=None,
        help="the run's work dir (runs/weights-<profile>-long), one recipe inside",
    )  # fmt: skip
    src.add_argument(
        "--recipe-dir", type=Path, default=None,
        help="<work dir>/models/diffusion/<recipe>, when there are several",
    )  # fmt: skip
    p.add_argument("--stages", nargs="+", default=["uncond", "drr"],
                   choices=["uncond", "drr", "cxr"], help="which stages")  # fmt: skip
    p.set_defaults(func=_add_stages)

    p = command(
        "generate",
        "generate 3D CTPA volumes from chest X-rays (one, or a cohort)",
        "Generate a CTPA volume (NIfTI, HU) from a chest X-ray with a trained bundle:\n"
        "  one X-ray:  --cxr FILE --out FILE.nii.gz\n"
        "  a cohort:   --manifest CSV (its cxr_path column) or --cxr-dir FOLDER, with\n"
        "              --out-dir FOLDER: one <patient_id>.nii.gz each and index.csv; patients\n"
        "              already generated with the same bundle, seed, sampler and steps are\n"
        "              skipped. Patient i (manifest row, or file in name order) gets the\n"
        "              book's seed SEED*100003+i.\n"
        "Arguments, bundle and X-rays are all checked before any network is loaded.\n"
        "Nothing is downloaded: a bundle that names a hub model needs it in the local\n"
        "Hugging Face cache, unless --allow-download.",
    )
    p.add_argument("--cxr", default=None, help="one DICOM, PNG or JPEG chest X-ray (default: none)")
    p.add_argument("--out", default=None, help="its output NIfTI, .nii.gz (default: none)")
    p.add_argument(
        "--manifest",
        default=None,
        help="a cohort manifest CSV; its cxr_path column (default: none)",
    )
    p.add_argument(
        "--cxr-dir", default=None, help="a folder of X-ray files, one per patient (default: none)"
    )
    p.add_argument("--out-dir", default=None, help="the cohort's output folder (default: none)")
    p.add_argument(
        "--run-dir",
        default=None,
        help="where a manifest's phantom rows were prepared (default: none)",
    )
    p.add_argument(
        "--bundle",
        "--checkpoint",
        dest="checkpoint",
        required=True,
        help="a trained bundle directory, e.g. weights/workshop or RUN_DIR/bundle (required)",
    )
    defaults = "; ".join(
        f"{n}: {q.sampler} {q.sample_steps_fast}" for n, q in sorted(PROFILES.items())
    )
    p.add_argument(
        "--sampler",
        default=None,
        choices=["ddpm", "ddim", "dpm++"],
        help=f"default: the bundle profile's ({defaults} steps)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="sampling steps, 1 to the training timesteps; default: the bundle profile's "
        "(ddpm: every training timestep)",
    )
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0, help="noise seed (the book records its own)")
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU when there is one)"
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="let a hub model named by the bundle be downloaded (default: local "
        "files only; HF_HUB_OFFLINE=0 also allows it)",
    )
    p.add_argument("--quiet", action="store_true", help="no start-up messages")
    p.add_argument(
        "--lora", default=None, help="LoRA adapters trained on this bundle (chapter 11); one X-ray"
    )
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "reader-kit",
        help="write an offline HTML reader-study kit (the paper's Table 6 study) from a run",
        description="Write KIT/index.html (opens from disk, offline) with 10 PE + 10 non-PE "
        "cases (phase 1: X-ray; phase 2: X-ray + generated CTPA) and 10 real + 10 generated "
        "volumes to tell apart and rate; the answer key goes to KIT-key.csv beside it.",
    )
    p.add_argument(
        "--run-dir",
        required=True,
        type=Path,
        help="a run directory with prepared/ and generated/ (e.g. runs/workshop)",
    )
    p.add_argument("--out", required=True, type=Path, help="the kit folder to write")
    p.add_argument(
        "--seed", type=int, default=0, help="case selection, codes and order (default 0)"
    )
    p.add_argument(
        "--cases-per-class",
        type=int,
        default=10,
        metavar="N",
        help="PE and non-PE cases each (default 10, as the paper)",
    )
    p.add_argument(
        "--volumes-per-kind",
        type=int,
        default=10,
        metavar="N",
        help="real and generated volumes each, for the real-or-generated task (default 10)",
    )
    p.set_defaults(func=_reader_kit)

    p = sub.add_parser(
        "reader-score",
        help="score reader-kit responses: Table 6, McNemar, binomial test, Likert means",
    )
    p.add_argument("kit", type=Path, help="the kit folder")
    p.add_argument(
        "responses",
        nargs="+",
        type=Path,
        help="response CSV files (one per reader, as the kit downloads them)",
    )
    p.add_argument("--key", type=Path, default=None, help="answer key (default: KIT-key.csv)")
    p.add_argument("--out", type=Path, default=None, help="also write the tables as CSV here")
    p.set_defaults(func=_reader_score)

    rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
    # argparse lists commands in the order they were added; list them in the user's order
    sub._choices_actions.sort(key=lambda a: rank.get(a.dest, len(rank)))
    return parser


def describe_error(e: BaseException) -> str:
    """One line (one per problem for a manifest) naming the file and what is wrong."""
    from xr2ct_lib.data.io import DataError
    from xr2ct_lib.data.manifest import ManifestError

    if isinstance(e, ManifestError):
        return "\n".join(str(p) for p in e.problems)
    from xr2ct_lib.files import FileError
    from xr2ct_lib.generate import GenerateError
    from xr2ct_lib.models.bundle import StaleBundleError

    if isinstance(e, FileError | DataError | UserError | GenerateError | StaleBundleError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror}"
    if isinstance(e, FileNotFoundError | NotADirectoryError | PermissionError):
        return str(e)  # raised with a message that names the file
    if isinstance(e, MemoryError):
        return "out of memory; try a smaller profile or fewer --workers"
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


EXPECTED_ERRORS = (OSError, ValueError, RuntimeError, MemoryError, UserError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    debug = args.debug or os.environ.get("XR2CT_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"xr2ct {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"xr2ct {args.command}: error: {describe_error(e)}", file=sys.stderr)
        if not isinstance(e, EXPECTED_ERRORS):
            print("(an unexpected error: `xr2ct --debug ...` shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
