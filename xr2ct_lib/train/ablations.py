"""Chapter 10: the loss-term and DRR-pre-training ablations, branched from one checkpoint.

Training every variant of Table 3 from scratch is out of a CPU book's reach. Each variant
here starts from the same weights, the EMA denoiser at the end of the unconditional stage
(the shipped bundle's ``stages/uncond``, or the live run's), and trains the same number of
optimiser steps: ``drr`` steps conditioned on DRRs then ``cxr`` steps on the X-rays, with the
variant's loss in both; the variant without DRR pre-training spends all of them on the
X-rays. Each variant's run is checkpointed under ``<run_dir>/ablations/<key>/`` (the key
covers the branch weights, the loss, the steps, the patients and the seed) and reused.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from xr2ct_lib.checkpoint import state_sha256
from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.data.folds import fold_split
from xr2ct_lib.train.losses import LossConfig
from xr2ct_lib.utils import recipe_key, seeded

if TYPE_CHECKING:  # the caller passes the pipeline in; training never builds one
    from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: which loss terms, and whether the DRR stage comes first."""

    name: str
    loss: LossConfig
    drr_pretraining: bool = True

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def paper_variants() -> list[Variant]:
    """Table 3's loss rows that the book can train, the full model, and no DRR pre-training."""
    off = {"perceptual": 0.0, "adversarial": 0.0, "classification": 0.0}
    full = LossConfig.full()
    return [
        Variant("L1", LossConfig.vanilla()),
        Variant("L1 + LPIPS", LossConfig(**{**off, "perceptual": full.perceptual})),
        Variant("L1 + ADV", LossConfig(**{**off, "adversarial": full.adversarial})),
        Variant("L1 + Classifier", LossConfig(**{**off, "classification": full.classification})),
        Variant("Full", full),
        Variant("Full, no DRR pre-training", full, drr_pretraining=False),
    ]


@dataclass
class BranchPoint:
    """The shared starting weights of every variant."""

    state: dict[str, torch.Tensor]
    description: str
    sha256: str


def branch_point(cfg: RunConfig) -> BranchPoint:
    """The EMA denoiser at the end of the unconditional stage of ``cfg.weights``' generator.

    Shipped: the bundle's ``stages/uncond`` (:func:`xr2ct_lib.models.stages.read_stage`,
    which says how to add it when it is missing). Trained: chapter 4's live run (trained
    here if it has not run).
    """
    from xr2ct_lib.models.bundle import read_provenance, show
    from xr2ct_lib.models.stages import read_stage, read_stage_final
    from xr2ct_lib.run.networks import networks_for
    from xr2ct_lib.train.generator import train_xray2ctpa

    nets = networks_for(cfg)
    if nets.weights == "shipped":
        state = read_stage(nets.bundle, "uncond").state_dict()
        steps = read_provenance(nets.bundle)["stages"]["uncond"]["steps"]
        where = f"the shipped bundle {show(nets.bundle)} (stages/uncond, {steps} steps)"
    else:
        train_xray2ctpa(cfg)
        models = cfg.run_dir / "models"
        key = json.loads((models / "diffusion_recipe.json").read_text())["key"]
        state, _ = read_stage_final(models / "diffusion" / key / "uncond")
        steps = cfg.profile.schedule("short").diffusion[0]
        where = f"this run's live training (chapter 4, {steps} steps)"
    described = f"end of the unconditional stage of {where}"
    return BranchPoint(state, described, state_sha256(state)[:16])


def pe_classifier(cfg: RunConfig) -> torch.nn.Module:
    """The latent PE classifier the classification term uses: chapter 8's model of the test
    fold (trained on real CTPA of the training folds; it never saw a test patient)."""
    from xr2ct_lib.models.classifiers import fold_model_dir, load_classifier

    d = fold_model_dir(cfg, cfg.profile.test_fold)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"no latent classifier for test fold {cfg.profile.test_fold} "
                                f"in {d}: run chapter 8 first")  # fmt: skip
    return load_classifier(d)


def loss_terms(cfg: RunConfig, variant: Variant, pipe: XRay2CTPAPipeline, classifier=None):
    """The variant's :class:`LossTerms` with the networks its terms need (seeded)."""
    from xr2ct_lib.models.lpips_net import lpips_net
    from xr2ct_lib.run.latents import load_normalizer
    from xr2ct_lib.train import losses

    c = variant.loss
    kw = {"halves": cfg.profile.halves}
    if c.perceptual or c.adversarial:
        kw["decode_slices"] = losses.make_decode_slices(pipe.vae, load_normalizer(cfg))
    if c.perceptual:
        kw["perceptual"] = losses.slice_perceptual(lpips_net(), resize_to=64)
    if c.classification:
        kw["classifier"] = classifier if classifier is not None else pe_classifier(cfg)
    with seeded(cfg.seed):  # the discriminator's initial weights
        if c.adversarial:  # as deep as the slices allow (the patch grid stays ≥ 2×2)
            side = cfg.profile.ct_size[1]
            layers = max(1, min(3, side.bit_length() - 3))
            kw["discriminator"] = losses.make_discriminator(num_layers_d=layers)
        return losses.LossTerms(c, **kw)


def variant_steps(variant: Variant, steps: tuple[int, int]) -> tuple[int, int, int]:
    """(uncond, drr, cxr) steps of a variant: the same total for every variant."""
    drr, cxr = steps
    return (0, drr, cxr) if variant.drr_pretraining else (0, 0, drr + cxr)


def train_variant(
    cfg: RunConfig,
    variant: Variant,
    branch: BranchPoint,
    pipe: XRay2CTPAPipeline,
    steps: tuple[int, int],
    classifier=None,
) -> tuple[XRay2CTPAPipeline, pd.DataFrame]:
    """Train ``variant`` from ``branch`` for ``steps`` (DRR, X-ray); its pipeline and history.

    The pipeline is ``pipe`` (the bundle's VAE, encoder and normaliser) with the variant's
    EMA denoiser; a finished run with the same key is reloaded from its checkpoints.
    """
    from xr2ct_lib.train.diffusion import run_staged_training
    from xr2ct_lib.train.generator import build_model, training_data

    p = cfg.profile
    cohort = PreparedCohort(cfg.run_dir)
    train_idx = fold_split(cohort.folds, p.test_fold, p.n_folds)["train"]
    stage_steps = variant_steps(variant, steps)
    key = recipe_key(kind="ablation", branch=branch.sha256, loss=variant.loss.to_dict(),
                     steps=stage_steps, lrs=p.stage_lrs, batch=p.batch_size, seed=cfg.seed,
                     ids=[cohort.ids[i] for i in train_idx], bundle=pipe.key)  # fmt: skip
    objective = build_model(cfg, like=pipe.denoiser)
    objective.denoiser.load_state_dict(branch.state)
    res = run_staged_training(
        objective, training_data(cfg, train_idx), stage_steps, batch=p.batch_size,
        ckpt_dir=ablation_dir(cfg) / f"{variant.slug}-{key}",
        loss_cfg=loss_terms(cfg, variant, pipe, classifier), lrs=p.stage_lrs, resume=True,
        seed=cfg.seed, progress=False,
    )  # fmt: skip
    out = copy.copy(pipe)
    out.denoiser = copy.deepcopy(objective.denoiser)
    out.denoiser.load_state_dict(res.ema_state)
    out.denoiser.eval()
    out.key = f"{pipe.key}-ablation-{variant.slug}-{key}"
    hist = res.history.assign(variant=variant.name)
    return out, hist


def branch_pipeline(pipe: XRay2CTPAPipeline, branch: BranchPoint) -> XRay2CTPAPipeline:
    """``pipe`` with the branch point's (unconditional) denoiser: the "clearly worse" control."""
    out = copy.copy(pipe)
    out.denoiser = copy.deepcopy(pipe.denoiser)
    out.denoiser.load_state_dict(branch.state)
    out.denoiser.eval()
    out.key = f"{pipe.key}-branch-{branch.sha256}"
    return out


def ablation_dir(cfg: RunConfig) -> Path:
    return Path(cfg.run_dir) / "ablations"


def train_variants(
    cfg: RunConfig, variants: list[Variant], branch: BranchPoint, pipe: XRay2CTPAPipeline
) -> tuple[dict[str, XRay2CTPAPipeline], pd.DataFrame]:
    """:func:`train_variant` for each variant with the profile's ``ablation_steps``; the
    pipelines by name, and one row per variant: steps, seconds, final loss terms."""
    import time

    from xr2ct_lib.utils import progress

    needs_cls = any(v.loss.classification for v in variants)
    classifier = pe_classifier(cfg) if needs_cls else None
    pipes, rows = {}, []
    for v in progress(variants, desc="ablation variants", unit="variant"):
        t0 = time.perf_counter()
        pipes[v.name], h = train_variant(cfg, v, branch, pipe, cfg.profile.ablation_steps,
                                         classifier)  # fmt: skip
        last = h.iloc[-1]
        stage_steps = variant_steps(v, cfg.profile.ablation_steps)
        rows.append({"variant": v.name, "DRR steps": stage_steps[1],
                     "X-ray steps": stage_steps[2],
                     "terms": " + ".join(["L1", *active_terms(v)]),
                     "train s (this call)": round(time.perf_counter() - t0, 1),
                     "s / step": round(float(h["sec"].mean()), 3),
                     "last total loss": round(float(last["total"]), 4)})  # fmt: skip
    return pipes, pd.DataFrame(rows).set_index("variant")


def active_terms(v: Variant) -> list[str]:
    return [k for k, w in v.loss.weights().items() if w]
