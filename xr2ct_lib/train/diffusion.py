"""Staged training of the latent diffusion model, resumable, on ``accelerate``.

The paper's schedule (Training strategy, Implementation details):

1. ``uncond``: unconditional pre-training (every condition replaced by the null embedding),
   lr 1e-4;
2. ``drr``: conditional on clean digitally reconstructed radiographs rendered from the CTs
   (registered by construction), lr 1e-4;
3. ``cxr``: conditional on the real chest X-rays, lr 1e-5.

Each stage: AdamW, cosine LR schedule (diffusers ``get_cosine_schedule_with_warmup``),
gradient clipping at 1.0, EMA 0.995 (diffusers ``EMAModel``), mixed precision (bf16) on a
GPU, several GPUs with ``accelerate launch``. Checkpoints (every ``ckpt_every`` steps and
at the end; :func:`xr2ct_lib.checkpoint.save_versioned`: ``<ckpt_dir>/step-NNNNNNNN`` and
the pointer ``<ckpt_dir>/LATEST``) hold the model, EMA, optimisers, LR scheduler, step,
history, RNG states and the number of processes as safetensors + JSON; a kill at any
moment, even during a save, leaves a complete checkpoint to resume from. The batch order,
timesteps, noise and condition dropout of step ``s`` depend only on (seed, stage, s,
process), so a run killed and resumed ends with the same weights as an uninterrupted one.
``<ckpt_dir>/final`` holds the EMA weights for inference (``denoiser/`` + ``scheduler/``,
as in a bundle).

Several processes: ``accelerate launch --multi_gpu --num_processes N script.py`` (on a
machine without GPUs, pass ``Accelerator(cpu=True)`` and the processes talk over gloo);
``batch`` is per process, rank 0 writes the checkpoints.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from xr2ct_lib import checkpoint as ck
from xr2ct_lib.config import PROFILES
from xr2ct_lib.models.diffusion import DiffusionLoss
from xr2ct_lib.train.latent_data import (  # noqa: F401 (also imported from here)
    STAGES,
    LatentPairDataset,
    batch_indices,
    seed_for,
)
from xr2ct_lib.train.losses import LossConfig, LossTerms
from xr2ct_lib.utils import progress as progress_bar

STAGE_LR = dict(zip(STAGES, PROFILES["paper"].stage_lrs, strict=True))  # the paper's defaults


# --------------------------------------------------------------------------- training
def default_accelerator():
    """bf16 mixed precision on a GPU that supports it, full precision on CPU."""
    from accelerate import Accelerator

    mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(mixed_precision=mp)


def _make_terms(loss_cfg: LossConfig | LossTerms | None) -> LossTerms | None:
    if loss_cfg is None or isinstance(loss_cfg, LossTerms):
        return loss_cfg
    return LossTerms(loss_cfg)


HISTORY_COLUMNS = ("stage", "step", "lr", "l1", "perceptual", "adversarial", "classification",
                   "disc", "total", "sec")  # fmt: skip


def history_frame(records: list[dict]) -> pd.DataFrame:
    """Loss records as a table in one column order (restored records come back key-sorted)."""
    df = pd.DataFrame(records)
    known = [c for c in HISTORY_COLUMNS if c in df.columns]
    return df[known + sorted(c for c in df.columns if c not in known)]


@dataclass
class StageResult:
    """A stage's (or several stages') loss history and the EMA weights of its denoiser."""

    history: pd.DataFrame
    ema_state: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Stage:
    """Everything one stage's loop updates and its checkpoints hold."""

    model: DiffusionLoss
    name: str
    steps: int
    batch: int
    seed: int
    lr: float
    acc: object
    wrapped: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: object
    ema: object
    terms: LossTerms | None
    disc: torch.nn.Module | None
    disc_opt: torch.optim.Optimizer | None
    history: list = field(default_factory=list)

    @property
    def param_names(self) -> list[str]:
        return [n for n, _ in self.model.denoiser.named_parameters()]

    def ema_state(self) -> dict[str, torch.Tensor]:
        """The EMA weights as a denoiser state dict (buffers from the online model)."""
        state = {k: v.detach().clone() for k, v in self.model.denoiser.state_dict().items()}
        for n, p in zip(self.param_names, self.ema.shadow_params, strict=True):
            state[n] = p.detach().clone()
        return state


def _setup(model, stage, steps, lr, batch, seed, loss_cfg, accelerator, weight_decay,
           disc_lr, warmup_steps, ema_decay) -> _Stage:  # fmt: skip
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    acc = accelerator or default_accelerator()
    terms = _make_terms(loss_cfg)
    opt = torch.optim.AdamW(model.denoiser.parameters(), lr=lr, weight_decay=weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, warmup_steps, max(steps, 1))
    wrapped, opt = acc.prepare(model, opt)
    disc = disc_opt = None
    if terms is not None:
        terms.to(acc.device)
        if terms.config.adversarial:
            disc_opt = torch.optim.AdamW(terms.discriminator.parameters(), lr=disc_lr)
            terms.discriminator, disc_opt = acc.prepare(terms.discriminator, disc_opt)
            disc = acc.unwrap_model(terms.discriminator)
    ema = EMAModel(model.denoiser.parameters(), decay=ema_decay)
    ema.to(acc.device)
    return _Stage(model, stage, steps, batch, seed, lr, acc, wrapped, opt, sched, ema, terms,
                  disc, disc_opt)  # fmt: skip


def _restore(st: _Stage, ckpt: Path) -> int:
    """Load the checkpoint ``ckpt`` into ``st``; return the step it was written at."""
    tensors, cfg = ck.load_checkpoint(ckpt)
    asked = {"steps": st.steps, "batch": st.batch, "seed": st.seed}
    found = {k: cfg.get(k) for k in asked}
    if found != asked:
        raise ValueError(
            f"checkpoint {ckpt} was for {found}; asked for {asked} (use resume=False to restart)"
        )
    world = st.acc.num_processes
    if cfg.get("num_processes", world) != world:
        raise ValueError(
            f"checkpoint {ckpt} was written by {cfg['num_processes']} process(es) (global batch "
            f"{cfg['num_processes'] * st.batch}); this run has {world}: a run resumes only "
            "with the number of processes that wrote its checkpoints (accelerate launch "
            f"--num_processes {cfg['num_processes']}); to train afresh, delete {ckpt.parent} "
            "and the later stages' folders beside it (or call with resume=False)"
        )
    st.model.denoiser.load_state_dict(ck.unprefixed("model", tensors))
    ema = dict(cfg["ema"])
    ema["shadow_params"] = [tensors[f"ema.{n}"] for n in st.param_names]
    st.ema.load_state_dict(ema)
    st.ema.to(st.acc.device)
    st.opt.load_state_dict(ck.unflatten_optimizer("optim", tensors, cfg["optim"]))
    st.sched.load_state_dict(cfg["lr_scheduler"])
    if st.disc is not None and "disc_optim" in cfg:
        st.disc.load_state_dict(ck.unprefixed("disc", tensors))
        st.disc_opt.load_state_dict(
            ck.unflatten_optimizer("disc_optim", tensors, cfg["disc_optim"])
        )
    ck.set_rng_state(cfg["rng"])
    st.history = list(cfg["history"])
    return int(cfg["step"])


def save_inference(directory: Path, st: _Stage) -> Path:
    """The EMA denoiser and the noise schedule, as ``denoiser/`` + ``scheduler/`` of a bundle."""
    from xr2ct_lib.models.bundle import SCHEDULER_CONFIG

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        st.model.denoiser.save(tmp / "denoiser", state=st.ema_state())
        ck.atomic_write_text(
            tmp / "scheduler" / SCHEDULER_CONFIG, st.model.scheduler.to_json_string()
        )
        ck.replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _save(st: _Stage, ckpt_dir: Path, step: int) -> None:
    """Checkpoint ``step`` (rank 0 writes; every process waits); the EMA weights at the end."""
    st.acc.wait_for_everyone()
    if st.acc.is_main_process:
        o_t, o_meta = ck.flatten_optimizer("optim", st.opt.state_dict())
        ema_sd = st.ema.state_dict()
        shadow = ema_sd.pop("shadow_params")
        tensors = {
            **ck.prefixed("model", st.model.denoiser.state_dict()),
            **{f"ema.{n}": p for n, p in zip(st.param_names, shadow, strict=True)},
            **o_t,
        }
        cfg = {
            "stage": st.name, "step": step, "steps": st.steps, "batch": st.batch,
            "seed": st.seed, "lr": st.lr, "num_processes": st.acc.num_processes,
            "loss": st.terms.config.to_dict() if st.terms is not None else None,
            "ema": ema_sd, "optim": o_meta, "lr_scheduler": ck.lr_scheduler_state(st.sched),
            "rng": ck.rng_state(), "history": st.history,
        }  # fmt: skip
        if st.disc is not None:
            d_t, d_meta = ck.flatten_optimizer("disc_optim", st.disc_opt.state_dict())
            tensors.update(ck.prefixed("disc", st.disc.state_dict()))
            tensors.update(d_t)
            cfg["disc_optim"] = d_meta
        ck.save_versioned(ckpt_dir, step, tensors, cfg)
        if step >= st.steps:
            save_inference(ckpt_dir / "final", st)
    st.acc.wait_for_everyone()


def _train_step(st: _Stage, data: LatentPairDataset, step: int, cond_key, max_grad_norm) -> dict:
    """One optimiser step (and one discriminator step); the logged record."""
    t0 = time.perf_counter()
    world, rank = st.acc.num_processes, st.acc.process_index
    idx = batch_indices(len(data), st.batch * world, st.seed, st.name, step)
    idx = idx[rank * st.batch : (rank + 1) * st.batch]
    b = {k: v.to(st.acc.device) for k, v in data.batch(idx).items()}
    gen = torch.Generator().manual_seed(seed_for(st.seed, STAGES.index(st.name), step, rank))
    cond = b[cond_key] if cond_key else None
    drop = torch.ones(len(idx), dtype=torch.bool) if cond_key is None else None
    losses = st.wrapped(b["latent"], cond, b["label"], st.terms, gen, drop)
    loss = losses["total"] + losses["disc"] if "disc" in losses else losses["total"]
    st.opt.zero_grad(set_to_none=True)
    if st.disc_opt is not None:
        st.disc_opt.zero_grad(set_to_none=True)
    lr_now = st.sched.get_last_lr()[0]
    st.acc.backward(loss)
    if st.acc.sync_gradients and max_grad_norm:
        st.acc.clip_grad_norm_(st.model.denoiser.parameters(), max_grad_norm)
    st.opt.step()
    if st.disc_opt is not None:
        st.disc_opt.step()
    st.sched.step()
    st.ema.step(st.model.denoiser.parameters())
    vals = torch.stack([v.detach().float() for v in losses.values()])
    if world > 1:
        vals = st.acc.reduce(vals, "mean")
    record = {"stage": st.name, "step": step + 1, "lr": lr_now}
    record.update({k: float(v) for k, v in zip(losses, vals.tolist(), strict=True)})
    record["sec"] = time.perf_counter() - t0
    return record


def train_stage(
    model: DiffusionLoss,
    data: LatentPairDataset,
    stage: str,
    steps: int,
    lr: float | None = None,
    batch: int = 2,
    ckpt_dir: str | Path | None = None,
    loss_cfg: LossConfig | LossTerms | None = None,
    accelerator=None,
    resume: bool = True,
    seed: int = 0,
    ckpt_every: int | None = None,
    warmup_steps: int = 0,
    weight_decay: float = 0.01,
    disc_lr: float = 1e-4,
    max_grad_norm: float = 1.0,
    ema_decay: float = 0.995,
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
) -> StageResult:
    """Train ``model`` for ``steps`` optimiser steps of one stage; the history and EMA weights.

    ``stage`` is "uncond" (all conditions dropped), "drr" or "cxr" (that embedding as the
    condition, dropped with probability ``denoiser.cond_drop_prob`` for guidance).
    ``batch`` is per process. ``loss_cfg`` is a :class:`LossConfig` (only the vanilla L1
    needs no networks) or a ready :class:`LossTerms`; None means L1 only. With
    ``resume=True`` the run continues from the latest checkpoint in ``ckpt_dir``; a
    finished stage is just reloaded. ``on_step(step, record)`` is called after every step.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    cond_key = {"uncond": None, "drr": "drr", "cxr": "cxr"}[stage]
    if cond_key and getattr(data, cond_key) is None:
        raise ValueError(f"stage {stage!r} needs {cond_key} embeddings; the dataset has none")
    if cond_key and not model.denoiser.cond_dim:
        raise ValueError(f"stage {stage!r} needs a conditional denoiser (cond_dim > 0)")
    lr = STAGE_LR[stage] if lr is None else float(lr)
    ckpt_every = ckpt_every or max(1, min(1000, steps // 4 or 1))
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else None
    st = _setup(model, stage, steps, lr, batch, seed, loss_cfg, accelerator, weight_decay,
                disc_lr, warmup_steps, ema_decay)  # fmt: skip

    start = 0
    last = ck.latest(ckpt_dir) if resume and ckpt_dir is not None else None
    if last is not None:
        start = _restore(st, last)
    st.wrapped.train()
    quiet = not progress or not st.acc.is_local_main_process
    bar = progress_bar(range(start, steps), desc=f"diffusion [{stage}]", initial=start,
                       total=steps, disable=quiet)  # fmt: skip
    for step in bar:
        record = _train_step(st, data, step, cond_key, max_grad_norm)
        st.history.append(record)
        bar.set_postfix(loss=f"{record['total']:.4f}")
        if ckpt_dir is not None and (step + 1) % ckpt_every == 0 and step + 1 < steps:
            _save(st, ckpt_dir, step + 1)
        if on_step is not None:
            on_step(step + 1, record)
    bar.close()
    if ckpt_dir is not None and (start < steps or not (ckpt_dir / "final").exists()):
        _save(st, ckpt_dir, steps)
    return StageResult(history_frame(st.history), st.ema_state())


def run_staged_training(
    model: DiffusionLoss,
    data: LatentPairDataset | dict[str, LatentPairDataset],
    steps: tuple[int, int, int],
    batch: int = 2,
    ckpt_dir: str | Path | None = None,
    loss_cfg: LossConfig | LossTerms | dict | None = None,
    lrs: tuple[float, float, float] = PROFILES["paper"].stage_lrs,
    accelerator=None,
    resume: bool = True,
    seed: int = 0,
    skip_missing_drr: bool = True,
    **kwargs,
) -> StageResult:
    """Unconditional → DRR-conditional → CXR-conditional training; one history for all.

    ``steps`` and ``lrs`` are per stage (a stage with 0 steps is skipped); checkpoints go
    to ``<ckpt_dir>/<stage>/``. ``loss_cfg`` may be a dict stage → config, and ``data`` a
    dict stage → dataset (the paper pretrains the first two stages on RSPECT, the book on its
    simulated CTPA collection, and trains the X-ray stage on the paired cohort). Without DRR
    embeddings the DRR stage is skipped (if ``skip_missing_drr``). Each stage starts from
    the previous stage's online weights with a fresh EMA; the result holds the last
    stage's EMA weights.
    """
    acc = accelerator or default_accelerator()
    frames, ema = [], {}
    for stage, n_steps, lr in zip(STAGES, steps, lrs, strict=True):
        stage_data = data[stage] if isinstance(data, dict) else data
        if n_steps <= 0 or (stage == "drr" and stage_data.drr is None and skip_missing_drr):
            continue
        cfg = loss_cfg.get(stage) if isinstance(loss_cfg, dict) else loss_cfg
        res = train_stage(
            model,
            stage_data,
            stage,
            n_steps,
            lr=lr,
            batch=batch,
            ckpt_dir=None if ckpt_dir is None else Path(ckpt_dir) / stage,
            loss_cfg=cfg,
            accelerator=acc,
            resume=resume,
            seed=seed,
            **kwargs,
        )
        frames.append(res.history)
        ema = res.ema_state
    history = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return StageResult(history, ema)
