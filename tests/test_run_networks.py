"""The run layer (``run/``): which networks a run uses, cached latents and embeddings that only
the one encoding step writes, on a tiny run with a shipped bundle of other weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tiny_run import PROFILE

from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.generation import cache, load


def test_shipped_weights_bring_their_own_latents_and_embeddings(run, tmp_path, monkeypatch):
    """weights='shipped': latents/embeddings of the bundle's VAE/encoder, its normaliser."""
    from xr2ct_lib.data.phantom import GENERATOR_VERSION
    from xr2ct_lib.data.preprocess import split_halves
    from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline
    from xr2ct_lib.models.bundle import write_bundle
    from xr2ct_lib.models.cxr_encoder import StandinCXREncoder, load_encoder
    from xr2ct_lib.models.vae import load_vae, make_standin_vae
    from xr2ct_lib.run import encode, networks
    from xr2ct_lib.run.embeddings import load_embeddings
    from xr2ct_lib.run.latents import load_latents, load_normalizer

    model, _ = load.live_generator(run)
    torch.manual_seed(1)  # other VAE and encoder weights than the run's own
    vae = make_standin_vae(PROFILE)
    enc = StandinCXREncoder(PROFILE.cxr_embed_dim, width=4, in_size=PROFILE.cxr_size).eval()
    prov = {"cohort": {"generator_version": GENERATOR_VERSION}, "profile": PROFILE.name}
    bundle = write_bundle(tmp_path / "weights" / PROFILE.name, model.denoiser, model.scheduler,
                          PROFILE, {"min": -7.0, "max": 7.0}, vae, enc, dtype=torch.float16,
                          provenance=prov)  # fmt: skip
    monkeypatch.setattr(networks, "WEIGHTS_DIR", tmp_path / "weights")
    shipped = dataclasses.replace(run, weights="shipped")
    nets = networks.networks_for(shipped)
    assert nets.bundle == bundle and "shipped bundle" in nets.describe()
    with pytest.raises(FileNotFoundError, match="encode the cohort with the shipped VAE"):
        load_latents(shipped, ["P04"])  # loaders only read
    assert encode.encode_missing(shipped) == nets  # the one step that writes the caches

    _, z = load_latents(shipped, ["P04"])
    ct = PreparedCohort(run.run_dir).load("P04")["ct"]
    expect = load_vae(bundle / "vae").encode_volume(split_halves(ct)[1]).numpy()
    np.testing.assert_allclose(z[0, 1], expect, rtol=1e-5, atol=1e-6)
    _, z_trained = load_latents(run, ["P04"])
    assert not np.allclose(z, z_trained)
    assert load_normalizer(shipped).min == -7.0
    cxr = torch.from_numpy(PreparedCohort(run.run_dir).load("P04")["cxr"][None])
    with torch.no_grad():
        e = load_encoder(bundle / "encoder").embed(cxr).numpy()
    np.testing.assert_allclose(load_embeddings(shipped)[4], e[0], rtol=1e-5, atol=1e-6)
    stamp = run.run_dir / "shipped" / encode.STAMP
    mtime = stamp.stat().st_mtime_ns
    encode.encode_missing(shipped)  # cached: not encoded again
    assert stamp.stat().st_mtime_ns == mtime

    pipe = XRay2CTPAPipeline.from_pretrained(nets.bundle, PROFILE)
    assert pipe.key == nets.key
    # how to sample is the run's profile's; without one, the bundle's own
    fewer = dataclasses.replace(PROFILE, sample_steps_fast=PROFILE.sample_steps_fast + 3)
    assert XRay2CTPAPipeline.from_pretrained(bundle, fewer).profile.sample_steps_fast == (
        PROFILE.sample_steps_fast + 3
    )
    assert XRay2CTPAPipeline.from_pretrained(bundle).profile == PROFILE
    cache.generate_patients(shipped, pipe, ["P04"], out_dir="generated_shipped")
    from safetensors import safe_open

    with safe_open(str(run.run_dir / "generated_shipped" / "P04.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["weights"] == "shipped" and meta["networks"] == nets.key
    assert meta["seed"] == str(cache.patient_seed(run, 4))
    assert load_generated(shipped, "generated_shipped")["P04"]["ct"].shape == PROFILE.ct_size
    with pytest.raises(ValueError, match="generated with the shipped networks"):
        load_generated(run, "generated_shipped")  # trained networks: another latent space
