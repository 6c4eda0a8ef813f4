"""How a bundle was trained: its ``provenance.json`` (the code, cohort, schedule, losses,
seconds and machine) and the one sentence the book writes about its pretraining."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xr2ct_lib.config import REPO_ROOT, RunConfig
from xr2ct_lib.files import sha256_file
from xr2ct_lib.models.bundle import show

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


def tail_mean(values) -> float:
    """The mean of the last :data:`FINAL_WINDOW` values (NaN when none)."""
    v = np.asarray(values, dtype=float)
    return float(v[-FINAL_WINDOW:].mean()) if len(v) else float("nan")


def recipe_seconds(directory: Path) -> float | None:
    """The seconds a cached training recipe took (its ``recipe.json``), if recorded."""
    f = directory / "recipe.json"
    return json.loads(f.read_text()).get("seconds") if f.is_file() else None


def training_provenance(
    cfg: RunConfig,
    cohort,
    train_idx,
    sched,
    history: pd.DataFrame,
    vae_hist: pd.DataFrame | None = None,
    enc_hist: pd.DataFrame | None = None,
    command: str | None = None,
    seconds: float | None = None,
    code: dict | None = None,
) -> dict:
    """How a bundle was trained: ``provenance.json`` (see :mod:`xr2ct_lib.models.bundle`).

    ``history`` is the diffusion loss history; ``vae_hist`` / ``enc_hist`` those of the VAE
    and encoder when they were trained; ``code`` the commit (default: now).
    """
    from xr2ct_lib.data.phantom import GENERATOR_VERSION

    models = cfg.run_dir / "models"
    per_stage = {
        stage: {"steps": int(len(g)), "final_loss": tail_mean(g["total"]),
                "seconds": float(g["sec"].sum()), "seconds_per_step": float(g["sec"].mean())}
        for stage, g in history.groupby("stage", sort=False)
    }  # fmt: skip
    train_folds = sorted(set(cohort.folds[train_idx].tolist()))
    sources = set(cohort.index["source"].astype(str)) if "source" in cohort.index else set()
    return {
        "format": 1,
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "code": code or git_commit(),
        "cohort": {
            "generator_version": GENERATOR_VERSION,
            "simulated": "phantom" in sources,
            "manifest": show(cfg.manifest),
            "manifest_sha256": sha256_file(cfg.manifest) if cfg.manifest.is_file() else None,
            "patients": len(cohort),
            "train_folds": train_folds,
            "held_out_folds": sorted(set(cohort.folds.tolist()) - set(train_folds)),
            "train_patients": len(train_idx),
        },
        "profile": cfg.profile.name,
        "halves": cfg.profile.halves,
        "prediction_type": cfg.profile.prediction_type,
        "seed": cfg.seed,
        "batch_size": cfg.profile.batch_size,
        "schedule": {"name": sched.name, "vae": sched.vae, "encoder": sched.encoder,
                     "diffusion": list(sched.diffusion), "diffusion_lrs": list(sched.lrs)},
        "final_losses": {
            "vae_l1": tail_mean(vae_hist["l1"]) if vae_hist is not None else None,
            "encoder_infonce": tail_mean(enc_hist["loss"]) if enc_hist is not None else None,
            **{f"diffusion_{s}": d["final_loss"] for s, d in per_stage.items()},
            "note": f"mean of the last {FINAL_WINDOW} steps",
        },
        "seconds": {
            "vae": recipe_seconds(models / "vae"),
            "encoder": recipe_seconds(models / "encoder"),
            "diffusion": float(history["sec"].sum()),
            "diffusion_per_stage": per_stage,
            "this_invocation": None if seconds is None else round(seconds, 1),
        },
        "machine": machine(),
        "weights_dtype": "float32",
    }  # fmt: skip


def pretraining_reading(prov: dict) -> str:
    """One Markdown sentence: what a bundle's diffusion stages pretrained on and with (its
    ``pretraining`` provenance); empty for a bundle trained on the cohort alone."""
    pre = prov.get("pretraining") or {}
    if not pre:
        return ""
    parts = []
    if "collection" in pre:
        c = pre["collection"]
        parts.append(f"its unconditional and DRR stages trained on the {c['patients']} simulated "
                     f"CT-only patients of the CTPA collection (the book's RSPECT: phantom seeds "
                     f"{c['seeds'][0]}–{c['seeds'][1]}, none of the cohort's; "
                     f"`{c['command']}`)")  # fmt: skip
    if "init_from" in pre:
        parts.append(f"starting from the denoiser in `{pre['init_from']['path']}`")
    if "latent_classifier" in pre:
        lc = pre["latent_classifier"]
        parts.append(f"its X-ray stage on the cohort's training folds with the paper's whole "
                     f"objective ({pre['loss']['cxr']}), the classification term read by the "
                     f"latent classifier pretrained on {lc['patients']} collection patients "
                     f"(AUC {lc['val_auc']:.2f} on {lc['val_patients']} it did not train "
                     f"on)")  # fmt: skip
    enc = prov.get("encoder")
    cond = f"; the X-ray condition is the {enc}" if enc else ""
    return "The shipped bundle: " + "; ".join(parts) + cond + "."
