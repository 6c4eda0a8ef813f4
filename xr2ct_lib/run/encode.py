"""The one place that writes a run's missing caches: the cohort's latents and embeddings
of the shipped bundle's VAE and encoder.

Loaders (:mod:`xr2ct_lib.run.latents`, :mod:`xr2ct_lib.run.embeddings`) only read; this
step is called explicitly by :func:`xr2ct_lib.book.setup` (every notebook, once the cohort
is prepared) and by a training entry point that reads them. With ``weights="trained"`` the
caches are chapter 2's and 3's own (:func:`~xr2ct_lib.run.latents.encode_cohort`,
:func:`~xr2ct_lib.run.embeddings.embed_cohort`), so there is nothing to do here.
"""

from __future__ import annotations

import dataclasses
import json

from xr2ct_lib.config import RunConfig
from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.models import bundle as B
from xr2ct_lib.run.networks import Networks, networks_for

STAMP = "networks.json"


def encode_missing(cfg: RunConfig) -> Networks | None:
    """With shipped weights: encode and embed the cohort with the bundle's VAE and encoder.

    Done once per bundle (a stamp holds its fingerprint); the normaliser is the bundle's,
    the one its denoiser was trained with. A no-op with trained weights (chapters 2 and 3
    write those).
    """
    if cfg.weights != "shipped":
        return None
    nets = networks_for(cfg)
    stamp = cfg.run_dir / "shipped" / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == nets.key:
        return nets
    from xr2ct_lib.data.cohort import PreparedCohort
    from xr2ct_lib.models.cxr_encoder import load_encoder
    from xr2ct_lib.models.vae import load_vae
    from xr2ct_lib.run.embeddings import embed_cohort
    from xr2ct_lib.run.latents import encode_cohort

    cohort = PreparedCohort(cfg.run_dir)
    shipped = dataclasses.replace(cfg, weights="shipped")
    encode_cohort(shipped, load_vae(nets.vae), cohort)
    B.read_normalizer(nets.bundle).save(nets.latents / "normalizer.json")
    embed_cohort(shipped, load_encoder(nets.encoder), cohort)
    atomic_write_text(stamp, json.dumps({"key": nets.key, "bundle": str(nets.bundle)}))
    return nets
