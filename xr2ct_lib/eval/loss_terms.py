"""The paper's full training objective evaluated once on a batch (chapter 4's table)."""

from __future__ import annotations

import pandas as pd
import torch

from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.data.folds import fold_split
from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline
from xr2ct_lib.models.diffusion import DiffusionLoss
from xr2ct_lib.run.latents import load_normalizer
from xr2ct_lib.train.generator import training_data
from xr2ct_lib.utils import seeded


def loss_terms_on_a_batch(cfg: RunConfig, pipe: XRay2CTPAPipeline):
    """The paper's four loss terms, once, on one training batch through ``pipe``'s denoiser.

    Returns (table of value, weight λ and weighted value per term; the weighted total; a
    description of the networks). The discriminator and latent DenseNet are untrained and
    seeded, so the table does not depend on what ran before.
    """
    from xr2ct_lib.eval import standins
    from xr2ct_lib.models.classifiers import LatentPEClassifier
    from xr2ct_lib.train import losses

    p = cfg.profile
    lpips = standins.lpips_net()
    with seeded(cfg.seed):  # the untrained discriminator and classifier
        terms = losses.LossTerms(
            losses.LossConfig.full(),
            decode_slices=losses.make_decode_slices(pipe.vae, load_normalizer(cfg)),
            perceptual=losses.slice_perceptual(lpips, resize_to=64),
            discriminator=losses.make_discriminator(),
            classifier=LatentPEClassifier.for_profile(p),
            halves=p.halves,
        )
    cohort = PreparedCohort(cfg.run_dir)
    data = training_data(cfg, fold_split(cohort.folds, p.test_fold, p.n_folds)["train"])
    batch = data.batch(list(range(min(p.batch_size, len(data)))))
    with torch.no_grad():
        out = DiffusionLoss(pipe.denoiser, pipe.scheduler)(
            batch["latent"], batch["cxr"], batch["label"], terms,
            torch.Generator().manual_seed(cfg.seed),
        )  # fmt: skip
    weights = {"l1": 1.0, **losses.LossConfig.full().weights()}
    table = pd.DataFrame({"value": {k: float(out[k]) for k in weights}, "weight λ": weights})
    table["weighted"] = table["value"] * table["weight λ"]
    nets = (f"perceptual: {lpips.describe()}; untrained PatchDiscriminator and latent "
            "DenseNet")  # fmt: skip
    return table.map(lambda v: f"{v:.3g}"), float(out["total"]), nets
