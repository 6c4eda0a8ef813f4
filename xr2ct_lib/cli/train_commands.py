"""The training commands: ``train`` (a bundle from scratch, resumable), ``add-stages`` and the
pretraining of chapter 8's two readers."""

from __future__ import annotations

import sys
from pathlib import Path

from xr2ct_lib.cli.common import UserError, add_cohort, optional_path, positive_int, seed_arg
from xr2ct_lib.config import HALVES, SCHEDULES


def parse_steps(text: str) -> tuple[int, int, int]:
    """``"300,500,1600"`` → the steps of the stages uncond, drr, cxr (each ≥ 0)."""
    from xr2ct_lib.models.stages import STAGE_NAMES

    try:
        steps = tuple(int(t) for t in text.split(","))
    except ValueError:
        steps = ()
    if len(steps) != len(STAGE_NAMES) or min(steps) < 0:
        raise ValueError(f"--diffusion-steps {text}: give {len(STAGE_NAMES)} whole numbers ≥ 0, "
                         f"the steps of {', '.join(STAGE_NAMES)} (e.g. 300,500,1600)")  # fmt: skip
    if steps[-1] < 1:
        raise ValueError(f"--diffusion-steps {text}: the {STAGE_NAMES[-1]} stage is what "
                         "`generate` uses; give it at least 1 step")  # fmt: skip
    return steps


def _train(args) -> int:
    from xr2ct_lib.config import DEFAULT_MANIFEST

    manifest = optional_path(args.manifest, "--manifest")
    run_dir, out = optional_path(args.run_dir, "--run-dir"), optional_path(args.out, "--out")
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
        steps = parse_steps(args.diffusion_steps) if args.diffusion_steps else None
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
        halves=args.halves,
        diffusion_steps=steps,
        keep_stages=not args.no_stages,
        collection=args.collection,
        encoder=args.encoder,
        vae_from=optional_path(args.vae_from),
        full_loss=args.full_loss,
        init_from=optional_path(args.init_from),
        workers=args.workers,
        overwrite=args.overwrite,
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


def _pretrain_reader(args, kind: str) -> int:
    """``pretrain-clot-reader`` and ``pretrain-cxr-reader``: sizes checked before simulating."""
    from xr2ct_lib.config import PROFILES
    from xr2ct_lib.train.pretrained import check_sizes
    from xr2ct_lib.train.readers import READERS

    reader = READERS[kind]
    patients, epochs = reader.shipped_sizes[args.profile]
    args.patients = patients if args.patients is None else args.patients
    args.epochs = epochs if args.epochs is None else args.epochs
    try:
        check_sizes(args.patients, args.epochs)
    except ValueError as e:
        raise UserError(f"--patients {args.patients} --epochs {args.epochs}: {e}") from None
    out = optional_path(args.out) or reader.directory(args.profile)
    extra = {"workers": args.workers} if kind == "cxr" else {}
    model, provenance = reader.pretrain(PROFILES[args.profile], args.patients, args.epochs,
                                        args.seed, **extra)  # fmt: skip
    provenance["command"] = "xr2ct " + " ".join(sys.argv[1:])
    reader.save(model, out, provenance)
    print(f"{out}: {kind} reader pretrained on {provenance['patients']} simulated patients "
          f"({provenance['pe_patients']} with PE), {args.epochs} epochs, "
          f"{provenance['simulate_s'] + provenance['train_s']:.0f} s")  # fmt: skip
    return 0


def _build_collection(args) -> int:
    """``build-collection``: the book's RSPECT, resumable; sizes checked before simulating."""
    import pandas as pd

    from xr2ct_lib.config import DEFAULT_MANIFEST, PROFILES
    from xr2ct_lib.run.networks import shipped_bundle
    from xr2ct_lib.train import collection as C

    n = C.SHIPPED[args.profile] if args.patients is None else args.patients
    if n < 2 or args.workers < 1:
        raise UserError(f"--patients {n} --workers {args.workers}: give ≥ 2 patients, ≥ 1 worker")
    vae = optional_path(args.vae) or shipped_bundle(args.profile) / "vae"
    if not (vae / "config.json").is_file():
        raise UserError(f"--vae {vae}: no VAE there (config.json missing)")
    cohort = pd.read_csv(DEFAULT_MANIFEST)["phantom_seed"].dropna().astype("int64")
    try:
        out = C.build_collection(PROFILES[args.profile], vae, n, optional_path(args.out), args.seed,
                                 args.workers, cohort_seeds=cohort)  # fmt: skip
    except ValueError as e:
        raise UserError(str(e)) from None
    info = C.json.loads((out / C.INFO).read_text())
    print(f"{out}: {info['patients']} CT-only patients ({info['pe_patients']} with PE), "
          f"{info['shards_built']} of {info['shards']} shards built now in "
          f"{info['build_s_this_invocation']:.0f} s")  # fmt: skip
    return 0


def _pretrain_latent(args) -> int:
    """``pretrain-latent-classifier``: on the profile's CTPA collection, with the bundle's VAE
    and normaliser."""
    from xr2ct_lib.config import PROFILES
    from xr2ct_lib.models.bundle import read_normalizer
    from xr2ct_lib.run.networks import shipped_bundle
    from xr2ct_lib.train import collection as C
    from xr2ct_lib.train.pretrained import save_heldout
    from xr2ct_lib.train.readers import READERS
    from xr2ct_lib.train.readers.latent import heldout_result

    reader = READERS["latent"]
    profile = PROFILES[args.profile]
    epochs = reader.shipped_sizes[args.profile][1] if args.epochs is None else args.epochs
    if epochs < 1:
        raise UserError(f"--epochs {epochs}: give ≥ 1")
    bundle = optional_path(args.bundle) or shipped_bundle(args.profile)
    try:
        where = optional_path(args.collection) or C.collection_dir(
            args.profile, C.SHIPPED[args.profile], bundle / "vae"
        )
        coll = C.load_collection(where,
                                 profile, bundle / "vae")  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    model, record = reader.pretrain(profile, coll, read_normalizer(bundle), epochs, args.seed)
    record["command"] = "xr2ct " + " ".join(sys.argv[1:])
    out = optional_path(args.out) or reader.directory(args.profile)
    reader.save(model, out, record)
    save_heldout(out, heldout_result(model, coll, read_normalizer(bundle), seed=args.seed))
    print(f"{out}: latent classifier pretrained on {record['patients']} collection patients, "
          f"held-out AUC {record['val_auc']:.3f} on {record['val_patients']}, "
          f"{record['train_s']:.0f} s")  # fmt: skip
    return 0


def _reader_command(command, kind: str, summary: str, description: str, what: str) -> None:
    p = command(f"pretrain-{kind}-reader", summary, description)
    p.add_argument("--profile", default="workshop", choices=["smoke", "workshop"],
                   help=f"the profile whose {what} size the reader reads")  # fmt: skip
    p.add_argument(
        "--patients",
        type=int,
        default=None,
        help="simulated patients, half with PE (default: the shipped reader's)",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="passes over them (default: the shipped reader's)"
    )
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the patients and the training")
    p.add_argument("--out", default=None, help=f"default: weights/<profile>-{kind}-reader")
    if kind == "cxr":
        p.add_argument("--workers", type=int, default=2,
                       help="processes simulating patients (default 2)")  # fmt: skip
    p.set_defaults(func=lambda args: _pretrain_reader(args, kind))


def add_commands(sub, command) -> None:
    """Add train, add-stages, pretrain-clot-reader and pretrain-cxr-reader; ``command(name,
    summary, description)`` makes one."""
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
    add_cohort(
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
        "--overwrite",
        action="store_true",
        help="replace a bundle at --out trained for another request (never a folder that is "
        "not a bundle, the work folder, the checkout, or weights/ for your own manifest)",
    )
    p.add_argument(
        "--stages",
        default="auto",
        help="diffusion stages to train, comma-separated from uncond,drr,cxr; auto: all "
        "three, or uncond,cxr when the cohort has no DRRs",
    )
    p.add_argument(
        "--halves",
        default=None,
        choices=list(HALVES),
        help="diffuse the two half volumes jointly or independently (the paper) "
        "(default: the profile's)",
    )
    p.add_argument(
        "--diffusion-steps",
        default=None,
        metavar="U,D,C",
        help="steps of the three diffusion stages (default: the schedule's)",
    )
    p.add_argument("--collection", type=int, default=0, metavar="N",
                   help="pretrain the uncond and DRR stages on N simulated CT-only patients "
                   "(the book's RSPECT, built with this run's VAE; 0: on the cohort)")  # fmt: skip
    p.add_argument("--encoder", default="standin", choices=["standin", "reader"],
                   help="the X-ray condition: the stand-in trained on the cohort, or the "
                   "pretrained X-ray reader's trunk (weights/<profile>-cxr-reader)")  # fmt: skip
    p.add_argument("--vae-from", default=None, metavar="DIR",
                   help="reuse a trained VAE (e.g. weights/workshop/vae), frozen")  # fmt: skip
    p.add_argument("--full-loss", action="store_true",
                   help="X-ray stage with the paper's whole objective (L1 + perceptual + "
                   "adversarial + classification by a latent classifier pretrained on the "
                   "collection)")  # fmt: skip
    p.add_argument(
        "--init-from",
        default=None,
        metavar="DIR",
        help="denoiser folder to start from (e.g. weights/workshop/stages/uncond)",
    )
    p.add_argument("--workers", type=int, default=2, help="processes building the collection")
    p.add_argument(
        "--no-stages",
        action="store_true",
        help="leave the stage checkpoints (chapter 10's branch points) out of the bundle",
    )
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of every random step")
    p.add_argument(
        "--ckpt-every",
        type=positive_int,
        default=200,
        help="diffusion checkpoint interval (steps)",
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
        "build-collection",
        "build the book's RSPECT: extra simulated CT-only patients for pretraining",
        "Simulate CT-only patients (CTPA + clean DRR + record, no X-ray, as RSPECT) from\n"
        "phantom seeds that neither the cohort nor any other pretraining set uses, and\n"
        "store their VAE latents, DRRs, labels and records in shards under\n"
        "runs/collections/<profile>-ctpa-<patients>-<VAE>. Resumable: rerun after a kill. `make\n"
        "ctpa-collection` calls this; the pretraining of the diffusion model's first two\n"
        "stages and of the latent classifier reads it.",
    )
    p.add_argument("--profile", default="workshop", choices=["smoke", "workshop"])
    p.add_argument("--patients", type=int, default=None,
                   help="CT-only patients, half with PE (default: smoke 200, workshop 2000)",
                   )  # fmt: skip
    p.add_argument("--vae", default=None, help="VAE folder (default: weights/<profile>/vae)")
    p.add_argument("--seed", type=int, default=0, help="which seed block of the collection")
    p.add_argument("--out", default=None,
                   help="default: runs/collections/<profile>-ctpa-<patients>-<VAE>")  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="simulating processes (default 2)")
    p.set_defaults(func=_build_collection)

    summary = "pretrain the latent PE classifier on the CTPA collection (Table 7's CTPA latent row)"
    p = command("pretrain-latent-classifier", summary,
                "Train the profile's latent DenseNet on the normalised latents of the simulated "
                "CTPA\ncollection (`xr2ct build-collection`), as the paper pretrains its latent "
                "classifier\non RSPECT latents; chapter 8 fine-tunes it per fold and the "
                "diffusion model's\nclassification term reads generated latents with it. "
                "`make latent-classifier`.")  # fmt: skip
    p.add_argument("--profile", default="workshop", choices=["smoke", "workshop"])
    p.add_argument("--epochs", type=int, default=None, help="default: smoke 3, workshop 12")
    p.add_argument(
        "--bundle", default=None, help="whose VAE and normaliser (default: weights/<profile>)"
    )
    p.add_argument("--collection", default=None,
                   help="default: the profile's shipped size, with the bundle's VAE")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: weights/<profile>-latent-classifier")
    p.set_defaults(func=_pretrain_latent)

    _reader_command(
        command,
        "clot",
        "pretrain chapter 8's clot reader on extra simulated CT-only patients",
        "Simulate CT-only patients in memory from phantom seeds the cohort never uses and\n"
        "train the clot-supervised CTPA reader on their clot masks (the book's analogue of\n"
        "INSPECT's RSPECT pretraining); chapter 8 reads every fold with it. `make\n"
        "clot-reader` calls this.",
        "CT",
    )
    _reader_command(
        command,
        "cxr",
        "pretrain chapter 8's X-ray reader on extra simulated X-ray patients",
        "Simulate patients in memory from phantom seeds the cohort never uses and train a\n"
        "CNN on their X-rays with one output for PE and one for each finding a radiograph\n"
        "shows (the book's analogue of the paper's pretrained X-ray network); chapter 8\n"
        "reads every fold's X-rays with it. `make cxr-reader` calls this.",
        "X-ray",
    )
