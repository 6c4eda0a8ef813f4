"""The book's and the reader study's commands: ``run-notebooks``, ``reader-kit``,
``reader-score``."""

from __future__ import annotations

import sys
from pathlib import Path

from xr2ct_lib.cli.common import add_cohort, seed_arg
from xr2ct_lib.config import WEIGHTS


def _notebooks(args) -> int:
    from xr2ct_lib.book import run_all

    only = args.only
    if args.with_prerequisites and only:
        from xr2ct_lib.book import with_prerequisites

        only = with_prerequisites(only, args.weights)
    run_all(args.profile, args.manifest, args.run_dir, args.seed, only=only,
            weights=args.weights, jobs=args.jobs)  # fmt: skip
    return 0


def _reader_kit(args) -> int:
    import time

    from xr2ct_lib.study.kit import kit_from_run
    from xr2ct_lib.study.select import KitInputError

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
    from xr2ct_lib.study.score import score_files

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


def add_commands(sub, command) -> None:
    """Add run-notebooks (made by ``command(name, summary, description)``), and reader-kit and
    reader-score (plain subparsers of ``sub``)."""
    p = command(
        "run-notebooks",
        "execute the notebooks into book/executed (or RUN_DIR/executed)",
        "Execute the numbered notebooks with papermill (parameters profile, manifest,\n"
        "run_dir, seed), each once the chapters it reads are done, into book/executed/, or\n"
        "into RUN_DIR/executed/ when --run-dir is given (your own cohort: the book's chapters\n"
        "are left as they are). The notebooks use the bundle `xr2ct train` wrote to\n"
        "RUN_DIR/bundle when there is one (else weights/<profile>).",
    )
    add_cohort(p, "run folder (default: runs/<profile>)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of every random step")
    p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02 (default: all)")
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="notebooks run side by side once the chapters they read are done, each with "
        "2 // JOBS torch threads (1: one after another, 2 threads each)",
    )
    p.add_argument(
        "--weights",
        choices=list(WEIGHTS),
        default=None,
        help="networks of chapters 4 on: the shipped bundle weights/<profile> (the notebooks' "
        "default when not given) or the ones this run trains live",
    )
    p.add_argument(
        "--with-prerequisites",
        action="store_true",
        help="with --only: also run the chapters those read, first (--only 03 "
        "--with-prerequisites runs 01, 02 and 03: what a fresh clone needs before chapter 3)",
    )
    p.set_defaults(func=_notebooks)

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
        "--seed", type=seed_arg, default=0, help="case selection, codes and order (default 0)"
    )
    for flag, what in (
        ("--cases-per-class", "PE and non-PE cases each (default 10, as the paper)"),
        ("--volumes-per-kind", "real and generated volumes each, for the real-or-generated task "
         "(default 10)"),
    ):  # fmt: skip
        p.add_argument(flag, type=int, default=10, metavar="N", help=what)
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
