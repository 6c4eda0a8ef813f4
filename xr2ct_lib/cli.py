"""The ``xr2ct`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xr2ct_lib.config import PROFILES, SCHEDULES, WEIGHTS


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

    run_all(args.profile, args.manifest, args.run_dir, args.seed, only=args.only,
            weights=args.weights)  # fmt: skip
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


def _train(args) -> int:
    import dataclasses

    from xr2ct_lib.train.bundle import train_bundle

    profile = PROFILES[args.profile]
    if args.halves:
        profile = dataclasses.replace(profile, halves=args.halves)
    train_bundle(
        profile=profile,
        schedule=args.schedule,
        out=args.out,
        work_dir=args.run_dir,
        manifest=args.manifest,
        seed=args.seed,
        ckpt_every=args.ckpt_every,
        command="xr2ct " + " ".join(sys.argv[1:]),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xr2ct", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, manifest_positional=False, run_dir_help="default: runs/<profile>"):
        if not manifest_positional:
            p.add_argument(
                "--manifest",
                default=None,
                help="cohort manifest CSV (default: the embedded cohort)",
            )
        p.add_argument("--profile", default="workshop", choices=sorted(PROFILES))
        p.add_argument("--run-dir", default=None, help=run_dir_help)
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
    p.add_argument(
        "--weights",
        choices=list(WEIGHTS),
        default=None,
        help="networks of chapters 4 on: the shipped bundle weights/<profile> (the notebooks' "
        "default) or the ones this run trains live",
    )
    p.set_defaults(func=_notebooks)

    p = sub.add_parser(
        "train",
        help="train a generation bundle from scratch (VAE, CXR encoder, diffusion); resumable",
        description="Train every network of a generation bundle with the profile's schedule "
        "on folds 2-5 (folds 0 and 1 held out) and write it with its provenance. Rerun the "
        "same command to resume a killed run. `make weights` calls this.",
    )
    common(
        p,
        run_dir_help="work dir for the cohort and checkpoints (runs/weights-<profile>-<schedule>)",
    )
    p.add_argument(
        "--schedule",
        default="long",
        choices=list(SCHEDULES),
        help="short: the book's live run; long: the shipped bundle (default: %(default)s)",
    )
    p.add_argument("--out", type=Path, default=None, help="bundle directory (weights/<profile>)")
    p.add_argument(
        "--ckpt-every", type=int, default=200, help="diffusion checkpoint interval (steps)"
    )
    p.add_argument(
        "--halves", default=None, choices=["joint", "independent"],
        help="diffuse the two halves jointly or independently (default: the profile's)",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("generate", help="generate a 3D CTPA from one chest X-ray")
    p.add_argument("--cxr", required=True, type=Path, help="DICOM, PNG or JPEG chest X-ray")
    p.add_argument("--checkpoint", required=True, type=Path, help="a trained bundle directory")
    p.add_argument("--out", required=True, type=Path, help="output NIfTI (.nii.gz)")
    p.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim", "dpm++"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
