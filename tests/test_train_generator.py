"""The run's generator (``train/generator.py``) on a tiny run directory built here: training,
reuse, generation, the halves, the shipped weights; and the CLI generator on it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_run import PROFILE, chapters_1_to_3

from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.generation import cache, load
from xr2ct_lib.train import generator as tg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """12 patients: prepared tensors, VAE, latents, encoder and embeddings, as chapters 1–3."""
    return chapters_1_to_3(tmp_path_factory.mktemp("run"))


def test_train_generate_reuse_and_determinism(run):
    model, hist = load.live_generator(run)
    assert list(hist["stage"].unique()) == ["uncond", "drr", "cxr"] and len(hist) == 8
    assert np.isfinite(hist["l1"]).all()
    bundle = run.run_dir / "models" / "bundle"
    assert {"profile.json", "normalizer.json", "denoiser", "vae", "encoder"} <= {
        p.name for p in bundle.iterdir()
    }
    # a finished run with the same recipe is reloaded, not retrained
    mtime = (bundle / "denoiser" / "model.safetensors").stat().st_mtime_ns
    again, hist2 = load.live_generator(run)
    assert (bundle / "denoiser" / "model.safetensors").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(hist2, hist, check_dtype=False)
    t = cache.generate_patients(run, again, ["P00", "P06"])
    assert len(t) == 2 and (t.seconds > 0).all()
    gen = load_generated(run)
    assert gen["P00"]["ct"].shape == PROFILE.ct_size
    assert gen["P00"]["z"].shape == (2, *PROFILE.latent_shape)
    assert gen["P00"]["ct"].min() >= -1 and gen["P00"]["ct"].max() <= 1
    first = gen["P00"]["ct"].copy()
    cached = cache.generate_patients(run, again, ["P00"])
    assert cached["reused"].tolist() == [True]
    assert cached.seconds.iloc[0] == t.seconds.iloc[0]  # the time it took when it was made
    cache.generate_patients(run, again, ["P00"], reuse=False)
    np.testing.assert_array_equal(load_generated(run)["P00"]["ct"], first)  # same seed
    assert not np.array_equal(gen["P06"]["ct"], first)
    assert load.sample_unconditional(run, again, 3).shape == (3, *PROFILE.latent_shape)


def test_generate_cli_writes_nifti_and_rejects_bad_input(run, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    from xr2ct_lib.data.io import read_ct

    load.live_generator(run)
    img = (np.random.default_rng(1).random((40, 40)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    out = tmp_path / "ct.nii.gz"
    cmd = [sys.executable, "-m", "xr2ct_lib.cli", "generate", "--cxr", str(tmp_path / "x.png"),
           "--checkpoint", str(run.run_dir / "models" / "bundle"), "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    vol = read_ct(out)
    assert vol.shape == PROFILE.ct_size
    assert vol.spacing == pytest.approx((PROFILE.ct_spacing_mm,) * 3)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    cmd[cmd.index("--cxr") + 1] = str(tmp_path / "bad.png")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode != 0 and "bad.png" in (r.stdout + r.stderr)
    assert (
        json.loads((run.run_dir / "models" / "bundle" / "normalizer.json").read_text())["min"] < 0
    )


def test_joint_training_data_holds_both_halves_of_each_patient(run):
    from xr2ct_lib.run.latents import load_latents, load_normalizer

    data = tg.training_data(run, [0, 3, 5])
    c = PROFILE.latent_shape[0]
    assert PROFILE.halves == "joint" and data.latents.shape == (3, 2 * c, *PROFILE.latent_shape[1:])
    _, z = load_latents(run, ["P03"])
    zn = load_normalizer(run).normalize(z[0])
    np.testing.assert_allclose(data.latents[1, :c].numpy(), zn[0], rtol=1e-6)  # even slices
    np.testing.assert_allclose(data.latents[1, c:].numpy(), zn[1], rtol=1e-6)  # odd slices
    assert data.labels.tolist() == [1, 1, 0]
    assert tg.build_model(run).denoiser.in_channels == 2 * c
    from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline

    indep = dataclasses.replace(PROFILE, halves="independent")
    with pytest.raises(ValueError, match="with independent halves needs 4"):
        XRay2CTPAPipeline(tg.build_model(run).denoiser, None, indep, None)


def test_independent_halves_train_and_generate(tmp_path):
    prof = dataclasses.replace(PROFILE, halves="independent")
    cfg = chapters_1_to_3(tmp_path, prof)
    data = tg.training_data(cfg, [0, 3])
    assert data.latents.shape == (4, *prof.latent_shape) and data.labels.tolist() == [1, 1, 1, 1]
    model, hist = load.live_generator(cfg)
    assert model.denoiser.in_channels == prof.latent_shape[0] and len(hist) == 8
    cache.generate_patients(cfg, model, ["P01"])
    gen = load_generated(cfg)["P01"]
    assert gen["z"].shape == (2, *prof.latent_shape) and gen["ct"].shape == prof.ct_size


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


def test_xr2ct_generate_reproduces_a_book_volume_bit_for_bit(run, tmp_path):
    """Same bundle, same X-ray file, the seed the book recorded: the same volume, in HU."""
    import subprocess
    import sys

    from PIL import Image
    from safetensors.torch import load_file, save_file

    from xr2ct_lib.data.hu_window import PAPER_WINDOW
    from xr2ct_lib.data.io import read_ct
    from xr2ct_lib.data.preprocess import read_and_preprocess_cxr

    pipe, _ = load.live_generator(run)
    yy, xx = np.mgrid[0:60, 0:50]
    png = tmp_path / "P11_cxr.png"
    Image.fromarray((120 + 90 * np.sin(yy / 7) * np.cos(xx / 5)).astype(np.uint8)).save(png)
    # the patient's prepared X-ray is this file, preprocessed as `xr2ct prepare` does
    f = run.run_dir / "prepared" / "P11.safetensors"
    arrays = load_file(str(f))
    arrays["cxr"] = read_and_preprocess_cxr(png, PROFILE.cxr_size)
    save_file(arrays, str(f))
    t = cache.generate_patients(run, pipe, ["P11"], out_dir="generated_book", reuse=False)
    book = load_generated(run, "generated_book")["P11"]["ct"]
    out = tmp_path / "cli.nii.gz"
    cmd = [sys.executable, "-m", "xr2ct_lib.cli", "generate", "--cxr", str(png), "--checkpoint",
           str(run.run_dir / "models" / "bundle"), "--out", str(out),
           "--seed", str(int(t["seed"].iloc[0]))]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    cli = read_ct(out).array
    np.testing.assert_array_equal(cli, PAPER_WINDOW.to_hu(book))
    assert np.unique(cli).size > 100  # a volume, not a constant


def test_sampler_sweep_generates_as_the_book_does(run):
    """The benchmark's volumes are generate_patients' (the book's seeds), in chapter 6's folders."""
    from xr2ct_lib.eval.fidelity import sampler_sweep
    from xr2ct_lib.eval.samplers import sampler_dir

    pipe, _ = load.live_generator(run)
    ids = ["P00", "P06"]
    table = sampler_sweep(run, pipe, ids, [("ddim", 2), ("dpm++", 2)])
    assert table[["sampler", "steps"]].values.tolist() == [["ddim", 2], ["dpm++", 2]]
    assert (table["seconds_per_volume"] > 0).all()
    swept = load_generated(run, sampler_dir("dpm++", 2))
    assert sampler_dir("dpm++", 2) == "generated_dpmpp_2" and sorted(swept) == ids
    t = cache.generate_patients(run, pipe, ids, "dpm++", 2, out_dir="generated_check", reuse=False)
    assert t["seed"].tolist() == [cache.patient_seed(run, 0), cache.patient_seed(run, 6)]
    again = load_generated(run, "generated_check")
    for pid in ids:
        np.testing.assert_array_equal(swept[pid]["ct"], again[pid]["ct"])
    # its PSNR, computed here without the library: 10 log10(2² / MSE) on [−1, 1] volumes
    cohort = PreparedCohort(run.run_dir)
    clip = {p: (np.clip(swept[p]["ct"], -1, 1), np.clip(cohort.load(p)["ct"], -1, 1)) for p in ids}
    mse = [np.mean((g.astype(np.float64) - t) ** 2) for g, t in clip.values()]
    expected = np.mean([10 * np.log10(4 / m) for m in mse])
    assert table.loc[1, "psnr"] == pytest.approx(expected, rel=1e-4)
