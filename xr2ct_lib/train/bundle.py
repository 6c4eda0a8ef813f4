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
``provenance.json`` and ``loss_curve.csv``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xr2ct_lib.config import REPO_ROOT, WEIGHTS_DIR, Profile, RunConfig, load_config
from xr2ct_lib.eval.folds import fold_split
from xr2ct_lib.models.bundle import show, write_bundle
from xr2ct_lib.models.latents import LatentNormalizer

HELD_OUT_FOLDS = (0, 1)  # test fold 0 and its validation fold 1: never trained on
FINAL_WINDOW = 50  # final losses are the mean of the last 50 steps


def git_commit() -> dict:
    """The commit of the code, and whether the library had uncommitted changes."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                               text=True, timeout=30)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no", "--", "xr2ct_lib")
    return {"git_commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None
            else None}  # fmt: skip


def machine() -> dict:
    """CPU model and cores, or the GPU's name."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "python": platform.python_version(), "torch": torch.__version__}  # fmt: skip
    return out


def sha256_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def status(part: str, msg: str) -> None:
    print(f">> [{part}] {msg}", flush=True)


def _tail_mean(values) -> float:
    v = np.asarray(values, dtype=float)
    return float(v[-FINAL_WINDOW:].mean()) if len(v) else float("nan")


def _recipe_seconds(directory: Path) -> float | None:
    f = directory / "recipe.json"
    return json.loads(f.read_text()).get("seconds") if f.is_file() else None


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


def train_bundle(
    profile: str | Profile = "workshop",
    schedule: str = "long",
    out: str | Path | None = None,
    work_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    seed: int = 0,
    ckpt_every: int = 200,
    command: str | None = None,
) -> Path:
    """Train every part of a bundle for ``schedule`` and write it to ``out``; return ``out``.

    ``profile`` is a profile name or a :class:`Profile` (tests use tiny ones).
    """
    from xr2ct_lib.data.cohort import prepare
    from xr2ct_lib.data.phantom import GENERATOR_VERSION
    from xr2ct_lib.train import autoencoder as ae
    from xr2ct_lib.train import encoder as enc_train
    from xr2ct_lib.train.pipeline import train_generator

    t_start = time.perf_counter()
    name = profile if isinstance(profile, str) else profile.name
    work = Path(work_dir) if work_dir else REPO_ROOT / "runs" / f"weights-{name}-{schedule}"
    cfg: RunConfig = load_config(name, manifest, work, seed, weights="trained")
    if not isinstance(profile, str):
        cfg = dataclasses.replace(cfg, profile=profile)
    p = cfg.profile
    sched = p.schedule(schedule)
    out = Path(out) if out else WEIGHTS_DIR / p.name
    status("plan", f"profile {p.name}, {schedule} schedule: VAE {sched.vae}, encoder "
           f"{sched.encoder}, diffusion {sched.diffusion} steps (lr {sched.lrs}), batch "
           f"{p.batch_size}, {p.halves} halves; work dir {show(work)} → {show(out)}")  # fmt: skip

    t0 = time.perf_counter()
    cohort = prepare(cfg)
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
    if sched.vae == 0:
        from xr2ct_lib.models.vae import load_sd_vae

        vae, vae_hist = load_sd_vae(), None
    else:
        vae, vae_hist = ae.train_slice_vae(cfg, cohort, train_idx, steps=sched.vae)
    norm = ae.encode_cohort(cfg, vae, cohort, exclude_folds=HELD_OUT_FOLDS)
    vae_final = _tail_mean(vae_hist["l1"]) if vae_hist is not None else float("nan")
    status("vae", f"{vae.describe()}; final L1 {vae_final:.4f}; latent range "
           f"{norm['min']:.3f}…{norm['max']:.3f}; {time.perf_counter() - t0:.0f} s")  # fmt: skip

    t0 = time.perf_counter()
    _, z = ae.load_latents(cfg)
    zn = LatentNormalizer.from_dict(norm).normalize(z).astype(np.float32)
    if sched.encoder == 0:
        from xr2ct_lib.models.cxr_encoder import OpenCLIPImageEncoder

        encoder, enc_hist = OpenCLIPImageEncoder.from_local(), None
    else:
        encoder, enc_hist = enc_train.train_cxr_encoder(
            cfg, cohort, zn, train_idx, steps=sched.encoder
        )
    enc_train.embed_cohort(cfg, encoder, cohort)
    enc_final = _tail_mean(enc_hist["loss"]) if enc_hist is not None else float("nan")
    status("encoder", f"{encoder.describe()}; final InfoNCE {enc_final:.4f}; "
           f"{time.perf_counter() - t0:.0f} s")  # fmt: skip

    t0 = time.perf_counter()
    recipe = ae.recipe_key(kind="bundle", profile=p.name, schedule=sched._asdict(),
                           halves=p.halves, prediction=p.prediction_type, batch=p.batch_size,
                           ids=[cohort.ids[i] for i in train_idx], seed=seed,
                           normalizer=norm)  # fmt: skip
    model, hist = train_generator(cfg, train_idx, sched.diffusion, sched.lrs,
                                  work / "models" / "diffusion" / recipe, resume=True,
                                  ckpt_every=ckpt_every)  # fmt: skip
    per_stage = {
        stage: {"steps": int(len(g)), "final_loss": _tail_mean(g["total"]),
                "seconds": float(g["sec"].sum()), "seconds_per_step": float(g["sec"].mean())}
        for stage, g in hist.groupby("stage", sort=False)
    }  # fmt: skip
    for stage, d in per_stage.items():
        status(stage, f"{d['steps']} steps, {d['seconds_per_step']:.3f} s/step, final loss "
               f"{d['final_loss']:.4f}")  # fmt: skip
    status("diffusion", f"{time.perf_counter() - t0:.0f} s in this invocation")

    models = work / "models"
    provenance = {
        "format": 1,
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "code": git_commit(),
        "cohort": {
            "generator_version": GENERATOR_VERSION,
            "manifest": show(cfg.manifest),
            "manifest_sha256": sha256_file(cfg.manifest),
            "patients": len(cohort),
            "train_folds": sorted(set(cohort.folds[train_idx].tolist())),
            "held_out_folds": list(HELD_OUT_FOLDS),
            "train_patients": len(train_idx),
        },
        "profile": p.name,
        "halves": p.halves,
        "prediction_type": p.prediction_type,
        "seed": seed,
        "batch_size": p.batch_size,
        "schedule": {"name": schedule, "vae": sched.vae, "encoder": sched.encoder,
                     "diffusion": list(sched.diffusion), "diffusion_lrs": list(sched.lrs)},
        "final_losses": {
            "vae_l1": vae_final if vae_hist is not None else None,
            "encoder_infonce": enc_final if enc_hist is not None else None,
            **{f"diffusion_{s}": d["final_loss"] for s, d in per_stage.items()},
            "note": f"mean of the last {FINAL_WINDOW} steps",
        },
        "seconds": {
            "vae": _recipe_seconds(models / "vae"),
            "encoder": _recipe_seconds(models / "encoder"),
            "diffusion": float(hist["sec"].sum()),
            "diffusion_per_stage": per_stage,
            "this_invocation": None,  # filled below
        },
        "machine": machine(),
        "weights_dtype": "float16",
    }  # fmt: skip
    provenance["seconds"]["this_invocation"] = round(time.perf_counter() - t_start, 1)
    # trained parts are copied from the work dir; frozen pretrained ones saved as loaded
    write_bundle(out, model, p, norm, vae=models / "vae" if vae_hist is not None else vae,
                 encoder=models / "encoder" if enc_hist is not None else encoder,
                 dtype=torch.float16, provenance=provenance,
                 loss_curve=loss_curve(vae_hist, enc_hist, hist))  # fmt: skip
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    status("bundle", f"{show(out)}: {size / 2**20:.1f} MiB, "
           f"{provenance['seconds']['this_invocation']:.0f} s in this invocation")  # fmt: skip
    return out
