"""The small training loop of the in-book stand-ins (VAE, 3D compressor, CXR encoder)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

from xr2ct_lib.utils import progress


def fit(
    loss_fn: Callable[[int, torch.Generator], dict[str, torch.Tensor]],
    params,
    steps: int,
    lr: float,
    seed: int,
    desc: str,
) -> pd.DataFrame:
    """AdamW with cosine decay; ``loss_fn(step, generator)`` returns named terms incl. ``loss``.

    Returns one row per step with every term. Gradients are clipped at norm 1.
    """
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr * 0.05)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    bar = progress(range(steps), desc=desc, unit="step")
    for step in bar:
        terms = loss_fn(step, gen)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        rows.append({"step": step, **{k: float(v.detach()) for k, v in terms.items()}})
        if step % 10 == 0:
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}")
    return pd.DataFrame(rows)


def flip_lr(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Left-right flip of a random half of the batch (the paper's augmentation)."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x
