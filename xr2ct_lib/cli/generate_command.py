"""The ``generate`` command: a trained bundle turns one X-ray, or a cohort's, into CT volumes."""

from __future__ import annotations

from xr2ct_lib.cli.common import UserError, optional_path, say, seed_arg
from xr2ct_lib.config import PROFILES
from xr2ct_lib.generation.samplers import SAMPLERS


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
    log = say if not args.quiet else None
    if log:
        log("starting (PyTorch and diffusers take a few seconds to import)")
    from xr2ct_lib.generation.volume import generate_volume

    common = dict(
        checkpoint_dir=optional_path(args.checkpoint, "--bundle"),
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
            cxr_path=optional_path(args.cxr, "--cxr"),
            out_path=optional_path(args.out, "--out"),
            lora=optional_path(args.lora, "--lora"),
            **common,
        )
        print(f"wrote {out}")
        return 0
    from xr2ct_lib.generation.cohort import generate_cohort

    out_dir = optional_path(args.out_dir, "--out-dir")
    index = generate_cohort(
        out_dir=out_dir,
        manifest=optional_path(args.manifest, "--manifest"),
        cxr_dir=optional_path(args.cxr_dir, "--cxr-dir"),
        run_dir=optional_path(args.run_dir, "--run-dir"),
        **common,
    )
    made = int(index["seconds"].notna().sum())
    print(
        f"wrote {made} volume(s) to {out_dir} ({len(index) - made} already there); index: "
        f"{out_dir / 'index.csv'}"
    )
    return 0


def add_commands(sub, command) -> None:
    """Add generate; ``command(name, summary, description)`` makes one."""
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
    for flag, what in (
        ("--cxr", "one DICOM, PNG or JPEG chest X-ray"),
        ("--out", "its output NIfTI, .nii.gz"),
        ("--manifest", "a cohort manifest CSV; its cxr_path column"),
        ("--cxr-dir", "a folder of X-ray files, one per patient"),
        ("--out-dir", "the cohort's output folder"),
        ("--run-dir", "where a manifest's phantom rows were prepared"),
    ):
        p.add_argument(flag, default=None, help=f"{what} (default: none)")
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
        choices=SAMPLERS,
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
    p.add_argument("--seed", type=seed_arg, default=0, help="noise seed (the book records its own)")
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
