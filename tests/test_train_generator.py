"""The run's generator (``train/generator.py``) on a tiny run directory built here: training,
reuse, generation, the halves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from tiny_run import PROFILE, chapters_1_to_3

from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.generation import cache, load
from xr2ct_lib.train import generator as tg


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
