"""The ``xr2ct`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xr2ct_lib.config import PROFILES


def _validate(args) -> int:
    from xr2ct_lib.config import load_config
    from xr2ct_lib.data.manifest import validate

    run_dir = args.run_dir or load_config(args.profile, args.manifest).run_dir
    problems = validate(args.manifest, run_dir=run_dir, require_phantom_files=args.require_files)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {args.manifest}", file=sys.stderr)
        return 1
    print(f"{args.manifest}: valid")
    return 0


def _prepare(args) -> int:
    from xr2ct_lib.config import load_config
    from xr2ct_lib.data.cohort import prepare
    from xr2ct_lib.data.manifest import ManifestError

    cfg = load_config(args.profile, args.manifest, args.run_dir, args.seed)
    try:
        cohort = prepare(cfg, workers=args.workers)
    except ManifestError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"prepared {len(cohort)} patients in {cfg.run_dir / 'prepared'}")
    return 0


def _notebooks(args) -> int:
    from xr2ct_lib.book import run_all

    run_all(args.profile, args.manifest, args.run_dir, args.seed, only=args.only)
    return 0


def _generate(args) -> int:
    from xr2ct_lib.generate import generate_volume

    generate_volume(
        cxr_path=args.cxr,
        checkpoint_dir=args.checkpoint,
        out_path=args.out,
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        guidance_scale=args.guidance,
    )
    print(f"wrote {args.out}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xr2ct", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, manifest_positional=False):
        if not manifest_positional:
            p.add_argument(
                "--manifest",
                default=None,
                help="cohort manifest CSV (default: the embedded cohort)",
            )
        p.add_argument("--profile", default="workshop", choices=sorted(PROFILES))
        p.add_argument("--run-dir", default=None, help="default: runs/<profile>")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("validate-manifest", help="check a manifest; one line per problem")
    p.add_argument("manifest", type=Path)
    common(p, manifest_positional=True)
    p.add_argument("--require-files", action="store_true", help="phantom files must exist too")
    p.set_defaults(func=_validate)

    p = sub.add_parser("prepare", help="build the cohort and the preprocessed tensors")
    common(p)
    p.add_argument("--workers", type=int, default=None, help="default: CPU cores, at most 4")
    p.set_defaults(func=_prepare)

    p = sub.add_parser(
        "run-notebooks", help="execute the notebooks with papermill into book/executed"
    )
    common(p)
    p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02")
    p.set_defaults(func=_notebooks)

    p = sub.add_parser("generate", help="generate a 3D CTPA from one chest X-ray")
    p.add_argument("--cxr", required=True, type=Path, help="DICOM, PNG or JPEG chest X-ray")
    p.add_argument("--checkpoint", required=True, type=Path, help="a trained bundle directory")
    p.add_argument("--out", required=True, type=Path, help="output NIfTI (.nii.gz)")
    p.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim", "dpm++"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
