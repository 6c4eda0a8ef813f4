"""Staged training of the latent diffusion model, resumable, on ``accelerate``.

The paper's schedule (Training strategy, Implementation details):

1. ``uncond``: unconditional pre-training (every condition replaced by the null embedding),
   lr 1e-4;
2. ``drr``: conditional on clean digitally reconstructed radiographs rendered from the CTs
   (registered by construction), lr 1e-4;
3. ``cxr``: conditional on the real chest X-rays, lr 1e-5.

Each stage: AdamW, cosine LR schedule (diffusers ``get_cosine_schedule_with_warmup``),
gradient clipping at 1.0, EMA 0.995, mixed precision (bf16) on a GPU, several GPUs with
``accelerate launch``. Checkpoints (``<ckpt_dir>/last``, every ``ckpt_every`` steps and at
the end) hold the model, EMA, optimisers, LR scheduler, step, history and RNG states as
safetensors + JSON. The batch order, timesteps, noise and condition dropout of step ``s``
depend only on (seed, stage, s, process), so a run killed and resumed ends with the same
weights as an uninterrupted one. ``<ckpt_dir>/final`` holds the EMA weights for inference
(:meth:`LatentDiffusion.save_pretrained`).

Several processes: ``accelerate launch --multi_gpu --num_processes N script.py`` (on a
machine without GPUs, pass ``Accelerator(cpu=True)`` and the processes talk over gloo);
``batch`` is per process, rank 0 writes the checkpoints.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from xr2ct_lib.checkpoint import load_checkpoint, prefixed, save_checkpoint, unprefixed
from xr2ct_lib.config import PROFILES
from xr2ct_lib.models.diffusion import LatentDiffusion
from xr2ct_lib.train.losses import LossConfig, LossTerms
from xr2ct_lib.utils import progress as progress_bar

STAGES = ("uncond", "drr", "cxr")
STAGE_LR = dict(zip(STAGES, PROFILES["paper"].stage_lrs, strict=True))  # the paper's defaults


class LatentPairDataset(Dataset):
    """Per half-volume: latent (C, D, h, w), DRR embedding (E,), CXR embedding (E,), label.

    ``drr_embeddings`` may be None (no DRR stage possible); ``labels`` None means unknown
    (stored as −1, ignored by the classification term).
    """

    def __init__(
        self,
        latents: torch.Tensor,
        cxr_embeddings: torch.Tensor | None = None,
        drr_embeddings: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        self.latents = torch.as_tensor(latents, dtype=torch.float32)
        n = self.latents.shape[0]
        if self.latents.ndim != 5:
            raise ValueError(f"latents must be (N, C, D, h, w), got {tuple(self.latents.shape)}")

        def check(name: str, a: torch.Tensor | None) -> torch.Tensor | None:
            if a is None:
                return None
            a = torch.as_tensor(a, dtype=torch.float32)
            if a.ndim != 2 or a.shape[0] != n:
                raise ValueError(f"{name} must be ({n}, E), got {tuple(a.shape)}")
            if not torch.isfinite(a).all():
                bad = (~torch.isfinite(a).all(1)).nonzero().flatten().tolist()
                raise ValueError(f"{name} has non-finite rows {bad[:10]}")
            return a

        self.cxr = check("cxr_embeddings", cxr_embeddings)
        self.drr = check("drr_embeddings", drr_embeddings)
        lab = torch.full((n,), -1, dtype=torch.long) if labels is None else torch.as_tensor(labels)
        if lab.shape != (n,):
            raise ValueError(f"labels must be ({n},), got {tuple(lab.shape)}")
        self.labels = lab.long()

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"latent": self.latents[i], "label": self.labels[i]}
        if self.cxr is not None:
            item["cxr"] = self.cxr[i]
        if self.drr is not None:
            item["drr"] = self.drr[i]
        return item

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        items = [self[i] for i in indices]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


# ------------------------------------------------------------------------- determinism
def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def batch_indices(n: int, batch: int, seed: int, stage: str, step: int) -> list[int]:
    """The global batch of ``step``: consecutive draws from per-epoch permutations.

    Depends only on (n, batch, seed, stage, step), never on what ran before.
    """
    s_idx = STAGES.index(stage)
    start = step * batch
    out, perms = [], {}
    for pos in range(start, start + batch):
        epoch = pos // n
        if epoch not in perms:
            g = torch.Generator().manual_seed(_seed_for(seed, s_idx, epoch))
            perms[epoch] = torch.randperm(n, generator=g).tolist()
        out.append(perms[epoch][pos % n])
    return out


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as JSON-ready lists."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global state)
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ----------------------------------------------------------------- optimiser (de)flatten
def _flatten_optimizer(prefix: str, sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, v in unprefixed(prefix, tensors).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = v
    for idx, sc in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(sc)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _lr_sched_state(sched) -> dict:
    sd = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    sd["lr_lambdas"] = [None] * len(sched.base_lrs)
    return sd


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


def train_stage(
    model: LatentDiffusion,
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
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
) -> pd.DataFrame:
    """Train ``model`` for ``steps`` optimiser steps of one stage; return the loss history.

    ``stage`` is "uncond" (all conditions dropped), "drr" or "cxr" (that embedding as the
    condition, dropped with probability ``denoiser.cond_drop_prob`` for guidance).
    ``batch`` is per process. ``loss_cfg`` is a :class:`LossConfig` (only the vanilla L1
    needs no networks) or a ready :class:`LossTerms`; None means L1 only. With
    ``resume=True`` the run continues from ``<ckpt_dir>/last`` if it is a checkpoint of
    this stage; a finished stage is just reloaded. ``on_step(step, record)`` is called
    after every step (a hook for logging, or for tests that interrupt a run).
    """
    from diffusers.optimization import get_cosine_schedule_with_warmup

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
    last_dir = ckpt_dir / "last" if ckpt_dir is not None else None

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
    model.enable_ema()
    model.ema.to(acc.device)

    start, history = 0, []
    if resume and last_dir is not None and (last_dir / "config.json").is_file():
        tensors, cfg = load_checkpoint(last_dir)
        if cfg.get("stage") == stage:
            if cfg.get("steps") != steps or cfg.get("batch") != batch or cfg.get("seed") != seed:
                raise ValueError(
                    f"checkpoint {last_dir} was for steps={cfg.get('steps')}, "
                    f"batch={cfg.get('batch')}, seed={cfg.get('seed')}; asked for "
                    f"steps={steps}, batch={batch}, seed={seed} (use resume=False to restart)"
                )
            model.denoiser.load_state_dict(unprefixed("model", tensors))
            ema = dict(cfg["ema"])
            names = [n for n, _ in model.denoiser.named_parameters()]
            ema["shadow_params"] = [tensors[f"ema.{n}"] for n in names]
            model.ema.load_state_dict(ema)
            model.ema.to(acc.device)
            opt.load_state_dict(_unflatten_optimizer("optim", tensors, cfg["optim"]))
            sched.load_state_dict(cfg["lr_scheduler"])
            if disc is not None and "disc_optim" in cfg:
                disc.load_state_dict(unprefixed("disc", tensors))
                disc_opt.load_state_dict(
                    _unflatten_optimizer("disc_optim", tensors, cfg["disc_optim"])
                )
            set_rng_state(cfg["rng"])
            start, history = int(cfg["step"]), list(cfg["history"])

    def save(step: int) -> None:
        if last_dir is None:
            return
        acc.wait_for_everyone()
        if acc.is_main_process:
            o_t, o_meta = _flatten_optimizer("optim", opt.state_dict())
            ema_sd = model.ema.state_dict()
            shadow = ema_sd.pop("shadow_params")
            names = [n for n, _ in model.denoiser.named_parameters()]
            tensors = {
                **prefixed("model", model.denoiser.state_dict()),
                **{f"ema.{n}": p for n, p in zip(names, shadow, strict=True)},
                **o_t,
            }
            cfg = {
                "stage": stage,
                "step": step,
                "steps": steps,
                "batch": batch,
                "seed": seed,
                "lr": lr,
                "num_processes": acc.num_processes,
                "loss": terms.config.to_dict() if terms is not None else None,
                "ema": ema_sd,
                "optim": o_meta,
                "lr_scheduler": _lr_sched_state(sched),
                "rng": rng_state(),
                "history": history,
            }
            if disc is not None:
                d_t, d_meta = _flatten_optimizer("disc_optim", disc_opt.state_dict())
                tensors.update(prefixed("disc", disc.state_dict()))
                tensors.update(d_t)
                cfg["disc_optim"] = d_meta
            save_checkpoint(last_dir, tensors, cfg)
            if step >= steps:
                model.save_pretrained(ckpt_dir / "final", use_ema=True)
        acc.wait_for_everyone()

    n = len(data)
    world, rank = acc.num_processes, acc.process_index
    wrapped.train()
    bar = progress_bar(
        range(start, steps),
        desc=f"diffusion [{stage}]",
        initial=start,
        total=steps,
        disable=not progress or not acc.is_local_main_process,
    )
    for step in bar:
        t0 = time.perf_counter()
        idx = batch_indices(n, batch * world, seed, stage, step)[rank * batch : (rank + 1) * batch]
        b = {k: v.to(acc.device) for k, v in data.batch(idx).items()}
        gen = torch.Generator().manual_seed(_seed_for(seed, STAGES.index(stage), step, rank))
        cond = b[cond_key] if cond_key else None
        drop = torch.ones(len(idx), dtype=torch.bool) if cond_key is None else None
        losses = wrapped(b["latent"], cond, b["label"], terms, gen, drop)
        loss = losses["total"] + losses["disc"] if "disc" in losses else losses["total"]
        opt.zero_grad(set_to_none=True)
        if disc_opt is not None:
            disc_opt.zero_grad(set_to_none=True)
        lr_now = sched.get_last_lr()[0]
        acc.backward(loss)
        if acc.sync_gradients and max_grad_norm:
            acc.clip_grad_norm_(model.denoiser.parameters(), max_grad_norm)
        opt.step()
        if disc_opt is not None:
            disc_opt.step()
        sched.step()
        model.ema_step()
        vals = torch.stack([v.detach().float() for v in losses.values()])
        if world > 1:
            vals = acc.reduce(vals, "mean")
        record = {"stage": stage, "step": step + 1, "lr": lr_now}
        record.update({k: float(v) for k, v in zip(losses, vals.tolist(), strict=True)})
        record["sec"] = time.perf_counter() - t0
        history.append(record)
        bar.set_postfix(loss=f"{record['total']:.4f}")
        if (step + 1) % ckpt_every == 0 and step + 1 < steps:
            save(step + 1)
        if on_step is not None:
            on_step(step + 1, record)
    bar.close()
    if start < steps or last_dir is None or not (ckpt_dir / "final").exists():
        save(steps)
    return pd.DataFrame(history)


def run_staged_training(
    model: LatentDiffusion,
    data: LatentPairDataset,
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
) -> pd.DataFrame:
    """Unconditional → DRR-conditional → CXR-conditional training; one history for all.

    ``steps`` and ``lrs`` are per stage (a stage with 0 steps is skipped); checkpoints go
    to ``<ckpt_dir>/<stage>/``. ``loss_cfg`` may be a dict stage → config. Without DRR
    embeddings the DRR stage is skipped (if ``skip_missing_drr``). Each stage starts from
    the previous stage's online weights with a fresh EMA.
    """
    acc = accelerator or default_accelerator()
    frames = []
    for stage, n_steps, lr in zip(STAGES, steps, lrs, strict=True):
        if n_steps <= 0 or (stage == "drr" and data.drr is None and skip_missing_drr):
            continue
        cfg = loss_cfg.get(stage) if isinstance(loss_cfg, dict) else loss_cfg
        frames.append(
            train_stage(
                model,
                data,
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
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
