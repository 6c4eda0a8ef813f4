"""``make weights``: train a whole generation bundle from scratch, resumably, with provenance.

The shipped bundle of a profile (``weights/<profile>/``) is trained by the project's own
code, as chapters 1–4 do live, but for the ``long`` schedule of the profile:

1. the cohort (built from the manifest and prepared, as ``xr2ct prepare``);
2. the slice-wise 2D VAE, then every patient's latents and the latent normaliser;
3. the CXR encoder stand-in, then every patient's X-ray and DRR embeddings;
4. the three diffusion stages (unconditional → DRR → X-ray).

Every part trains on folds 2–5: folds 0 and 1 are held out (chapter 5 generates them and
chapter 8 reads them). All intermediate results live in a work run directory
(``runs/weights-<profile>-<schedule>/``); parts already finished are reused and the
diffusion stages resume from their last checkpoint, so a killed run is restarted with the
same command. The bundle is written at the end: float16 weights (loaded back as float32),
``provenance.json``, ``loss_curve.csv`` and the EMA denoisers at the end of the
unconditional and DRR stages (``stages/``, the ablations' branch points:
:mod:`xr2ct_lib.models.stages`).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xr2ct_lib.config import (
    DEFAULT_MANIFEST,
    REPO_ROOT,
    WEIGHTS_DIR,
    Profile,
    RunConfig,
    get_profile,
    load_config,
)
from xr2ct_lib.data.folds import fold_split
from xr2ct_lib.data.io import DataError
from xr2ct_lib.files import FileError, remove_temporaries, sha256_file
from xr2ct_lib.models.bundle import show
from xr2ct_lib.models.stages import BUNDLE_STAGES, add_stages
from xr2ct_lib.run.embeddings import embed_cohort
from xr2ct_lib.run.latents import encode_cohort, load_latents
from xr2ct_lib.train.latent_data import STAGES
from xr2ct_lib.train.provenance import git_commit, tail_mean, training_provenance
from xr2ct_lib.utils import recipe_key

HELD_OUT_FOLDS = (0, 1)  # test fold 0 and its validation fold 1: never trained on


def status(part: str, msg: str) -> None:
    print(f">> [{part}] {msg}", flush=True)


def loss_curve(vae_hist, enc_hist, diff_hist) -> pd.DataFrame:
    """One table of every training step: part (vae, encoder, uncond, drr, cxr), step, loss."""
    parts = []
    if vae_hist is not None:
        parts.append(pd.DataFrame({"part": "vae", "step": vae_hist["step"] + 1,
                                   "loss": vae_hist["loss"]}))  # fmt: skip
    if enc_hist is not None:
        parts.append(pd.DataFrame({"part": "encoder", "step": enc_hist["step"] + 1,
                                   "loss": enc_hist["loss"]}))  # fmt: skip
    parts.append(pd.DataFrame({"part": diff_hist["stage"], "step": diff_hist["step"],
                               "loss": diff_hist["total"]}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def parse_stages(text: str | None) -> tuple[str, ...] | None:
    """``"uncond,cxr"`` → ``("uncond", "cxr")`` in the training order; None/"auto" → None."""
    if text is None or text.strip() == "auto":
        return None
    asked = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in asked if t not in STAGES]
    if unknown or not asked:
        raise ValueError(f"--stages {text}: give some of {', '.join(STAGES)} (comma-separated) "
                         "or auto")  # fmt: skip
    if "cxr" not in asked:
        raise ValueError(f"--stages {text}: the cxr stage is what `generate` uses; keep it")
    return tuple(st for st in STAGES if st in asked)


def _accelerator():
    """The run's accelerator, made before anything else: several processes under
    ``accelerate launch`` (gloo on CPU), bf16 on a GPU that supports it unless the launch
    config says otherwise, and a long timeout (rank 0 prepares the cohort and trains the
    VAE and encoder alone while the others wait)."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    kw = {"cpu": not torch.cuda.is_available(),
          "kwargs_handlers": [InitProcessGroupKwargs(timeout=timedelta(hours=24))]}  # fmt: skip
    if "ACCELERATE_MIXED_PRECISION" not in os.environ:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        kw["mixed_precision"] = "bf16" if bf16 else "no"
    return Accelerator(**kw)


def _check_drr(cohort, stages: tuple[str, ...] | None, manifest: Path) -> tuple[str, ...]:
    """The diffusion stages to train: all three when every patient has a DRR, else without
    the DRR stage (asked for explicitly, that is an error naming the patients)."""
    has = cohort.has("drr")
    if has.all():
        return stages or STAGES
    missing = [cohort.ids[i] for i in np.flatnonzero(~has)]
    if has.any():
        raise DataError(
            manifest,
            f"{len(missing)} of {len(cohort)} patients have no DRR (drr_path empty: "
            f"{', '.join(missing[:5])}): give a DRR for every patient, or for none (then the "
            "DRR stage is skipped)",
        )
    if stages is not None and "drr" in stages:
        raise DataError(
            manifest,
            "no patient has a DRR (no drr_path column, or it is empty), so the drr stage "
            "cannot train: use --stages uncond,cxr",
        )
    return tuple(st for st in (stages or STAGES) if st != "drr")


LOCK = "train.lock"


@contextmanager
def run_lock(work: Path):
    """Hold ``work/train.lock`` while training: a second ``xr2ct train`` into the same work
    dir is refused naming the first's pid. A POSIX record lock (``lockf``): held by this
    process only, not by the workers it forks, and released by the kernel when it ends,
    killed or not. Under ``accelerate launch`` rank 0 holds it for all."""
    if os.environ.get("RANK", "0") != "0":
        yield None
        return
    work.mkdir(parents=True, exist_ok=True)
    fd = os.open(work / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FileError(work, f"another `xr2ct train` (pid {pid}) is training in this "
                            "work folder; wait for it to end, or stop it") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield work / LOCK
    finally:
        os.close(fd)  # releases the lock


def training_request(cfg: RunConfig, schedule: str, halves: str, stages, diffusion_steps,
                     keep_stages: bool) -> dict:  # fmt: skip
    """What a ``train`` call asks for, recorded in the bundle's provenance as ``request``: a
    rerun of the same request may write over its own bundle."""
    m = cfg.manifest
    steps = [int(n) for n in diffusion_steps] if diffusion_steps else None
    return {"profile": cfg.profile.name, "schedule": schedule, "seed": int(cfg.seed),
            "halves": halves, "manifest_sha256": sha256_file(m) if m.is_file() else None,
            "stages": list(stages) if stages else None, "keep_stages": bool(keep_stages),
            "diffusion_steps": steps}  # fmt: skip


def _bundle_request(prov: dict) -> dict:
    """The request a bundle was trained for; for a bundle written before provenance recorded
    it (the shipped ones), its profile, schedule, seed, halves and manifest sha256."""
    if "request" in prov:
        return prov["request"]
    return {"profile": prov.get("profile"), "schedule": prov.get("schedule", {}).get("name"),
            "seed": prov.get("seed"), "halves": prov.get("halves"),
            "manifest_sha256": prov.get("cohort", {}).get("manifest_sha256")}  # fmt: skip


def check_out(out: Path, work: Path, request: dict, own_manifest: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` that training would destroy or must not touch, before any work:
    a file; the work dir or a folder holding it; the checkout or a folder holding it;
    ``weights/`` for a user's own manifest (the shipped bundles); a non-empty folder that is
    not an xr2ct bundle; a bundle trained for another request, unless ``overwrite``."""
    from xr2ct_lib.models.bundle import BUNDLE_PARTS, PROVENANCE

    out, work = out.resolve(), work.resolve()
    where = "--out"
    if out.exists() and not out.is_dir():
        raise FileError(out, f"{where} is a file; give a folder for the bundle")
    if work.is_relative_to(out):
        raise FileError(out, f"{where} is the work folder {work} or holds it: writing the "
                        "bundle there would delete the training; give another folder")  # fmt: skip
    if REPO_ROOT.resolve().is_relative_to(out):
        raise FileError(out, f"{where} is the checkout or holds it; give a folder of its own")
    if own_manifest and out.is_relative_to(WEIGHTS_DIR.resolve()):
        raise FileError(out, f"{where} is under {WEIGHTS_DIR}, the shipped bundles: a bundle "
                        "of your own cohort goes to RUN_DIR/bundle or another folder")  # fmt: skip
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    prov_file = out / PROVENANCE
    if not prov_file.is_file() or any(p not in entries for p in BUNDLE_PARTS):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise FileError(out, f"{where} holds files that are not an xr2ct bundle ({shown}); "
                        "give a new or empty folder")  # fmt: skip
    from xr2ct_lib.checkpoint import read_json

    had = _bundle_request(read_json(prov_file))
    differ = [f"{k} {had.get(k)} → {request.get(k)}" for k in had if had.get(k) != request.get(k)]
    if differ and not overwrite:
        raise FileError(out, f"{where} holds a bundle trained for another request "
                        f"({'; '.join(differ)}): add --overwrite to replace it, or give "
                        "another folder")  # fmt: skip


def _remove_leftovers(out: Path) -> None:
    """Temporary folders of a bundle write that was killed (``.<name>.XXXXXXXX`` beside it)."""
    import shutil

    from xr2ct_lib.files import TEMPORARY

    for p in out.parent.glob(f".{out.name}.*"):
        if p.is_dir() and TEMPORARY.fullmatch(p.name):
            shutil.rmtree(p, ignore_errors=True)


def train_bundle(
    profile: str | Profile = "workshop",
    schedule: str = "long",
    out: str | Path | None = None,
    work_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    seed: int = 0,
    ckpt_every: int = 200,
    command: str | None = None,
    stages: tuple[str, ...] | None = None,
    halves: str | None = None,
    diffusion_steps: tuple[int, int, int] | None = None,
    keep_stages: bool = True,
    collection: int = 0,
    encoder: str = "standin",
    vae_from: str | Path | None = None,
    full_loss: bool = False,
    init_from: str | Path | None = None,
    workers: int = 1,
    overwrite: bool = False,
) -> Path:
    """Train every part of a bundle for ``schedule`` and write it to ``out``; return ``out``.

    ``profile`` is a profile name or a :class:`Profile` (tests use tiny ones). ``stages``
    are the diffusion stages to train (default: all three, or ``uncond, cxr`` for a cohort
    without DRRs); the others get 0 steps. Under ``accelerate launch`` with several
    processes, rank 0 prepares the cohort and trains the VAE and encoder, every process
    trains the diffusion model (``batch_size`` per process) and rank 0 writes the bundle.
    ``halves`` (``"joint"``/``"independent"``) and ``diffusion_steps`` override the
    profile's halves and the schedule's diffusion steps (both recorded in the provenance);
    ``keep_stages=False`` leaves out the stage checkpoints chapter 10 branches from.

    As the paper pretrains on RSPECT: ``collection`` > 0 builds (or reuses) that many
    simulated CT-only patients encoded with this run's VAE (:mod:`.collection`, ``workers``
    processes) and trains the unconditional and DRR stages on them instead of the cohort;
    ``encoder="reader"`` conditions on the pretrained X-ray reader's trunk
    (:class:`~xr2ct_lib.models.cxr_encoder.ReaderCXREncoder`) instead of training the
    stand-in; ``vae_from`` reuses a trained VAE (a bundle's ``vae/``, frozen, as the paper's
    SD VAE); ``full_loss`` trains the X-ray stage with the paper's whole objective (L1 +
    perceptual + adversarial + classification, the classifier pretrained on the collection,
    :mod:`.readers.latent`); ``init_from`` is a denoiser folder to start from (a bundle's
    ``stages/uncond``).

    ``out`` is checked first (:func:`check_out`: a bundle of another request is replaced
    only with ``overwrite``), and one training at a time holds the work dir (:func:`run_lock`).
    """
    name = profile if isinstance(profile, str) else profile.name
    work = Path(work_dir) if work_dir else REPO_ROOT / "runs" / f"weights-{name}-{schedule}"
    cfg = load_config(name, manifest, work, seed, weights="trained")
    out = Path(out) if out else WEIGHTS_DIR / name
    prof = get_profile(name) if isinstance(profile, str) else profile
    request = training_request(cfg, schedule, halves or prof.halves, stages, diffusion_steps,
                               keep_stages)  # fmt: skip
    options = {"collection": int(collection), "encoder": encoder, "full_loss": bool(full_loss),
               "vae_from": None if vae_from is None else str(vae_from),
               "init_from": None if init_from is None else str(init_from)}  # fmt: skip
    if options != {"collection": 0, "encoder": "standin", "full_loss": False, "vae_from": None,
                   "init_from": None}:  # fmt: skip
        request["pretraining"] = options
    check_out(out, cfg.run_dir, request, cfg.manifest != DEFAULT_MANIFEST, overwrite)
    with run_lock(cfg.run_dir) as lock:
        if lock is not None:  # what killed runs left half-written: never read, never kept
            remove_temporaries(cfg.run_dir)
        return _train_bundle(profile, schedule, out, work, manifest, seed, ckpt_every, command,
                             stages, halves, diffusion_steps, keep_stages, request,
                             options, workers)  # fmt: skip


def _train_bundle(profile, schedule, out, work_dir, manifest, seed, ckpt_every, command, stages,
                  halves, diffusion_steps, keep_stages, request, options,
                  workers) -> Path:  # fmt: skip
    """:func:`train_bundle` once ``out`` is checked and the work dir locked."""
    collection, encoder, full_loss = (options[k] for k in ("collection", "encoder", "full_loss"))
    vae_from, init_from = options["vae_from"], options["init_from"]
    from xr2ct_lib.data.cohort import PreparedCohort, prepare
    from xr2ct_lib.run.latents import load_normalizer
    from xr2ct_lib.train.generator import train_generator

    t_start = time.perf_counter()
    acc = _accelerator()
    main = acc.is_main_process
    say = status if main else (lambda part, msg: None)
    code = git_commit()  # the code that trains: read before anything can change it
    name = profile if isinstance(profile, str) else profile.name
    work = Path(work_dir) if work_dir else REPO_ROOT / "runs" / f"weights-{name}-{schedule}"
    cfg: RunConfig = load_config(name, manifest, work, seed, weights="trained")
    if not isinstance(profile, str):
        cfg = dataclasses.replace(cfg, profile=profile)
    if halves is not None:
        cfg = dataclasses.replace(cfg, profile=dataclasses.replace(cfg.profile, halves=halves))
    p = cfg.profile
    sched = p.schedule(schedule)
    if diffusion_steps is not None:
        sched = sched._replace(diffusion=tuple(int(n) for n in diffusion_steps))
    if vae_from is not None:  # reused as it is: no VAE steps in this bundle's schedule
        sched = sched._replace(vae=0)
    if encoder == "reader":
        sched = sched._replace(encoder=0)
    out = Path(out) if out else WEIGHTS_DIR / p.name
    procs = f", {acc.num_processes} processes" if acc.num_processes > 1 else ""
    say("plan", f"profile {p.name}, {schedule} schedule: VAE {sched.vae}, encoder "
        f"{sched.encoder}, diffusion {sched.diffusion} steps (lr {sched.lrs}), batch "
        f"{p.batch_size}{procs}, {p.halves} halves; on {acc.device}; work dir {show(work)} "
        f"→ {show(out)}")  # fmt: skip

    t0 = time.perf_counter()
    parts = None
    if encoder not in ("standin", "reader"):
        raise ValueError(f"encoder must be 'standin' or 'reader', got {encoder!r}")
    if main:  # the others wait: one process writes the cohort, VAE, encoder and caches
        cohort = prepare(cfg)
        stages = _check_drr(cohort, stages, cfg.manifest)  # before hours of VAE training
        parts = _train_parts(cfg, sched, cohort, t0, encoder, vae_from)
    acc.wait_for_everyone()
    if not main:
        cohort = PreparedCohort(work)
        stages = _check_drr(cohort, stages, cfg.manifest)
    train_idx = fold_split(cohort.folds, test_fold=HELD_OUT_FOLDS[0], n_folds=p.n_folds)["train"]
    steps = zip(STAGES, sched.diffusion, strict=True)
    sched = sched._replace(diffusion=tuple(n if st in stages else 0 for st, n in steps))
    norm = load_normalizer(cfg)

    t0 = time.perf_counter()
    recipe = recipe_key(kind="bundle", profile=p.name, schedule=sched._asdict(),
                        **p.denoiser_recipe(), ids=[cohort.ids[i] for i in train_idx],
                        seed=seed, normalizer=norm.to_dict())  # fmt: skip
    pretraining = {}
    for turn in (True, False):  # rank 0 builds what the others then read
        if main == turn:
            pretraining = _pretraining(cfg, collection, full_loss, init_from, workers, say)
        acc.wait_for_everyone()
    if pretraining:
        recipe = recipe_key(base=recipe, pretraining=pretraining["key"])
    if vae_from is not None:
        vae_file = Path(vae_from) / "model.safetensors"
        pretraining.setdefault("record", {})["vae_from"] = {
            "path": show(Path(vae_from)),
            "sha256": sha256_file(vae_file) if vae_file.is_file() else None,
        }
    say("diffusion", f"stages {', '.join(stages)}: {sched.diffusion} steps")
    generator, hist = train_generator(cfg, train_idx, sched.diffusion, sched.lrs,
                                 work / "models" / "diffusion" / recipe, resume=True,
                                 ckpt_every=ckpt_every, accelerator=acc,
                                 **pretraining.get("kwargs", {}))  # fmt: skip
    say("diffusion", f"{time.perf_counter() - t0:.0f} s in this invocation")
    if main:
        trained = {st for st, n in zip(STAGES, sched.diffusion, strict=True) if n > 0}
        keep = [st for st in BUNDLE_STAGES if st in trained and keep_stages]
        _write(cfg, generator, hist, parts, train_idx, sched, out, command, code, t_start,
               (work / "models" / "diffusion" / recipe, keep), request,
               pretraining.get("record"))  # fmt: skip
    acc.wait_for_everyone()
    return out


def _pretraining(cfg: RunConfig, collection: int, full_loss: bool, init_from, workers: int,
                 say) -> dict:  # fmt: skip
    """What the diffusion stages pretrain on and with (the collection's data, the full loss
    terms, the starting denoiser): ``{"key", "kwargs", "record"}``, or {} for none."""
    from xr2ct_lib.models.cxr_encoder import load_encoder
    from xr2ct_lib.run.latents import load_normalizer
    from xr2ct_lib.run.networks import networks_for

    if not collection and not full_loss and init_from is None:
        return {}
    nets = networks_for(cfg, "trained")
    norm = load_normalizer(cfg)
    kwargs, record, key = {}, {}, {}
    if collection or full_loss:
        from xr2ct_lib.train import collection as C

        t0 = time.perf_counter()
        n = collection or C.SHIPPED.get(cfg.profile.name, 200)
        where = C.collection_dir(cfg.profile.name, n, nets.vae)
        C.build_collection(cfg.profile, nets.vae, n, where, cfg.seed, workers)
        coll = C.load_collection(where, cfg.profile, nets.vae)
        record["collection"] = {**coll.info, "seconds": round(time.perf_counter() - t0, 1)}
        key["collection"] = [coll.info["seeds"], coll.info["vae_sha256"]]
        say("collection", f"{coll.describe()}")
        if collection:
            kwargs["pretrain_data"] = C.collection_data(coll, load_encoder(nets.encoder), norm,
                                                        cfg.profile.halves)  # fmt: skip
    if full_loss:
        clf = _latent_classifier(cfg, coll, norm)
        record["latent_classifier"] = {
            k: clf.pretraining[k]
            for k in ("patients", "val_patients", "val_auc", "epochs", "train_s")
        }
        key["classifier"] = record["latent_classifier"]
        kwargs["loss_cfg"] = {"cxr": _full_terms(cfg, nets, norm, clf)}
        record["loss"] = {"cxr": "L1 + 0.01·perceptual + 0.001·adversarial + 0.08·classification"}
    if init_from is not None:
        from xr2ct_lib.checkpoint import load_checkpoint

        f = Path(init_from) / "model.safetensors"
        kwargs["init_state"] = {k: v.float() for k, v in load_checkpoint(init_from)[0].items()}
        record["init_from"] = {"path": show(Path(init_from)), "sha256": sha256_file(f)}
        key["init"] = record["init_from"]["sha256"]
    return {"key": recipe_key(**key), "kwargs": kwargs, "record": record}


def _latent_classifier(cfg: RunConfig, coll, norm):
    """The latent classifier of the classification term: the profile's shipped one when it
    was pretrained on latents of this VAE and normaliser (`make latent-classifier`), else one
    pretrained here on the collection (cached in the work dir)."""
    from xr2ct_lib.train.readers import latent

    L = latent.READER

    sha = coll.info["vae_sha256"]
    for d in (L.directory(cfg.profile.name), cfg.run_dir / "models" / "latent_classifier"):
        if (d / "config.json").is_file():
            try:
                return L.load(d, cfg.profile, (), sha, norm)
            except ValueError:
                continue
    epochs = L.shipped_sizes.get(cfg.profile.name, (None, 3))[1]
    clf, rec = L.pretrain(cfg.profile, coll, norm, epochs, cfg.seed)
    L.save(clf, d, rec)
    return L.load(d, cfg.profile, (), sha, norm)


def _full_terms(cfg: RunConfig, nets, norm, classifier):
    """The paper's loss terms for the X-ray stage, with the run's VAE and ``classifier``."""
    from xr2ct_lib.models.lpips_net import lpips_net
    from xr2ct_lib.models.vae import load_vae
    from xr2ct_lib.train import losses
    from xr2ct_lib.utils import seeded

    decode = losses.make_decode_slices(load_vae(nets.vae), norm)
    side = cfg.profile.ct_size[1]
    with seeded(cfg.seed):
        disc = losses.make_discriminator(num_layers_d=max(1, min(3, side.bit_length() - 3)))
    return losses.LossTerms(losses.LossConfig.full(), decode_slices=decode,
                            perceptual=losses.slice_perceptual(lpips_net(), resize_to=64),
                            discriminator=disc, classifier=classifier.requires_grad_(False),
                            halves=cfg.profile.halves)  # fmt: skip


def _train_parts(cfg: RunConfig, sched, cohort, t0: float, encoder: str = "standin",
                 vae_from=None):  # fmt: skip
    """Rank 0: the cohort's split, the VAE and latents, the encoder and embeddings."""
    from xr2ct_lib.train import autoencoder as ae
    from xr2ct_lib.train import encoder as enc_train

    p = cfg.profile
    split = fold_split(cohort.folds, test_fold=HELD_OUT_FOLDS[0], n_folds=p.n_folds)
    train_idx = split["train"]
    held = sorted(set(cohort.folds.tolist()) - set(cohort.folds[train_idx].tolist()))
    if held != sorted(HELD_OUT_FOLDS):
        raise RuntimeError(f"expected folds {HELD_OUT_FOLDS} held out, got {held}")
    status(
        "cohort",
        f"{len(cohort)} patients, training on {len(train_idx)} (folds "
        f"{sorted(set(cohort.folds[train_idx].tolist()))}), {time.perf_counter() - t0:.0f} s",
    )

    t0 = time.perf_counter()
    if vae_from is not None:  # a trained VAE, frozen; where trained_generator reads it
        from xr2ct_lib.models.vae import load_vae

        vae, vae_hist = load_vae(vae_from), None
        vae.save(cfg.run_dir / "models" / "vae")
    elif sched.vae == 0:
        from xr2ct_lib.models.vae import load_sd_vae

        vae, vae_hist = load_sd_vae(), None
    else:
        vae, vae_hist = ae.train_slice_vae(cfg, cohort, train_idx, steps=sched.vae)
    norm = encode_cohort(cfg, vae, cohort)  # constants from the training folds only
    source_norm = None if vae_from is None else Path(vae_from).parent / "normalizer.json"
    if source_norm is not None and source_norm.is_file():  # a bundle's VAE: its constants
        from xr2ct_lib.models.normalizer import LatentNormalizer
        from xr2ct_lib.run.latents import latent_dir

        norm = LatentNormalizer.load(source_norm)
        norm.save(latent_dir(cfg) / "normalizer.json")
    if sorted(norm.extra["excluded_folds"]) != sorted(HELD_OUT_FOLDS):
        raise RuntimeError(f"latent normaliser left out {norm.extra['excluded_folds']}")
    vae_final = tail_mean(vae_hist["l1"]) if vae_hist is not None else float("nan")
    lo, hi = float(np.min(norm.min)), float(np.max(norm.max))
    status("vae", f"{vae.describe()}; final L1 {vae_final:.4f}; latent range {lo:.3f}…{hi:.3f}; "
           f"{time.perf_counter() - t0:.0f} s")  # fmt: skip

    t0 = time.perf_counter()
    _, zn = load_latents(cfg, normalized=True)
    if encoder == "reader":  # the pretrained X-ray reader's trunk, frozen
        from xr2ct_lib.data.cohort import load_records
        from xr2ct_lib.models.cxr_encoder import ReaderCXREncoder
        from xr2ct_lib.train.readers.cxr import READER as XRAY

        records = load_records(cfg.run_dir)
        seeds = records["phantom_seed"].dropna() if "phantom_seed" in records else ()
        reader = XRAY.shipped(p, cohort_seeds=seeds)
        if reader is None:
            raise FileNotFoundError(f"{XRAY.directory(p.name)}: no X-ray reader to condition on; "
                                    f"`make cxr-reader PROFILE={p.name}` first")  # fmt: skip
        source = show(XRAY.directory(p.name))
        encoder, enc_hist = ReaderCXREncoder(reader, p.cxr_embed_dim, source), None
        encoder.save(cfg.run_dir / "models" / "encoder")
    elif sched.encoder == 0:
        from xr2ct_lib.models.cxr_encoder import OpenCLIPImageEncoder

        encoder, enc_hist = OpenCLIPImageEncoder.from_local(), None
    else:
        encoder, enc_hist = enc_train.train_cxr_encoder(
            cfg, cohort, zn, train_idx, steps=sched.encoder
        )
    embed_cohort(cfg, encoder, cohort)
    enc_final = tail_mean(enc_hist["loss"]) if enc_hist is not None else float("nan")
    status("encoder", f"{encoder.describe()}; final InfoNCE {enc_final:.4f}; "
           f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    return cohort, vae, vae_hist, encoder, enc_hist


def _write(cfg, generator, hist, parts, train_idx, sched, out, command, code, t_start, stage_src,
           request=None, pretraining=None):  # fmt: skip
    """Rank 0: the bundle, float16, with its provenance, loss curve and stage checkpoints
    (``stage_src``: the recipe dir and the stages to copy from it); ``request`` is recorded,
    and ``pretraining``: what the diffusion stages pretrained on and with."""
    cohort, vae, vae_hist, encoder, enc_hist = parts
    prov = training_provenance(cfg, cohort, train_idx, sched, hist, vae_hist, enc_hist,
                               command=command, seconds=time.perf_counter() - t_start,
                               code=code)  # fmt: skip
    prov["weights_dtype"] = "float16"
    prov["encoder"] = encoder.describe()
    prov["vae"] = vae.describe()
    if pretraining:
        prov["pretraining"] = pretraining
    if request is not None:
        prov["request"] = request
    _remove_leftovers(Path(out))
    for stage, d in prov["seconds"]["diffusion_per_stage"].items():
        status(stage, f"{d['steps']} steps, {d['seconds_per_step']:.3f} s/step, final loss "
               f"{d['final_loss']:.4f}")  # fmt: skip
    if vae_hist is None:  # a frozen pretrained VAE / encoder is saved as loaded
        generator.vae = vae
    if enc_hist is None:
        generator.encoder = encoder
    generator.save(out, dtype=torch.float16, provenance=prov,
                   loss_curve=loss_curve(vae_hist, enc_hist, hist))  # fmt: skip
    if stage_src[1]:
        stages = add_stages(out, *stage_src)
        status("stages", f"stage checkpoints {', '.join(stages)} (float16) in {show(out)}/stages")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    status("bundle", f"{show(out)}: {size / 2**20:.1f} MiB, "
           f"{time.perf_counter() - t_start:.0f} s in this invocation")  # fmt: skip
    return out
