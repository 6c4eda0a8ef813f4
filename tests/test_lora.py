"""LoRA adapters: zero-initialised B changes nothing, safetensors round trip, pipeline and CLI."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_run import PROFILE, chapters_1_to_3

from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline
from xr2ct_lib.models import lora as L
from xr2ct_lib.train import adapt
from xr2ct_lib.train.generator import train_xray2ctpa


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    run = chapters_1_to_3(tmp_path_factory.mktemp("lora"))
    train_xray2ctpa(run)
    return run, run.run_dir / "models" / "bundle"


def _sample(pipe, cxr, seed=3):
    return pipe(cxr, generator=torch.Generator().manual_seed(seed)).volumes[0]


def test_fresh_lora_leaves_the_output_unchanged_and_trains_only_adapters(bundle):
    run, b = bundle
    pipe = XRay2CTPAPipeline.from_pretrained(b)
    den = L.add_lora(copy.deepcopy(pipe.denoiser), rank=2)
    trainable, total = L.trainable_parameters(den)
    assert 0 < trainable < 0.5 * total
    assert all(("lora_" in n) == p.requires_grad for n, p in den.named_parameters())
    x = torch.randn(2, *PROFILE.diffusion_shape)
    t, c = torch.tensor([500, 20]), torch.randn(2, PROFILE.cxr_embed_dim)
    with torch.no_grad():
        torch.testing.assert_close(den(x, t, cond=c), pipe.denoiser(x, t, cond=c),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip


def test_adapters_round_trip_through_safetensors_pipeline_and_cli(bundle, tmp_path):
    from PIL import Image

    from xr2ct_lib.data.cohort import PreparedCohort
    from xr2ct_lib.data.hu_window import PAPER_WINDOW
    from xr2ct_lib.data.io import read_ct
    from xr2ct_lib.data.preprocess import read_and_preprocess_cxr

    run, b = bundle
    pipe = XRay2CTPAPipeline.from_pretrained(b)
    cohort = PreparedCohort(run.run_dir)
    ids = cohort.ids[:4]
    ct = np.stack([cohort.load(p)["ct"] for p in ids])
    cxr = np.stack([cohort.load(p)["cxr"] for p in ids])
    data = adapt.external_training_data(pipe, ct, cxr, cohort.labels[:4])
    lora = adapt.adapt(pipe, data, "LoRA", steps=3, lr=1e-2, rank=2)
    full = adapt.adapt(pipe, data, "full fine-tuning", steps=3, lr=1e-3)
    assert 0 < lora.trainable < full.trainable == full.total
    assert lora.pipe.denoiser is not pipe.denoiser and L.has_lora(lora.pipe.denoiser)
    x = torch.from_numpy(cxr[:1])
    before = _sample(pipe, x)
    adapted = _sample(lora.pipe, x)
    assert not np.allclose(adapted, before)  # the adapters changed the generator
    d = L.save_lora(tmp_path / "adapter", lora.pipe.denoiser, base_key=pipe.key)
    assert {f.name for f in d.iterdir()} == {L.WEIGHTS_NAME, L.CONFIG_NAME}
    again = XRay2CTPAPipeline.from_pretrained(b).load_lora(d)
    np.testing.assert_array_equal(_sample(again, x), adapted)  # same volume after reload
    assert again.key != pipe.key
    other = copy.deepcopy(pipe.denoiser)
    with pytest.raises(ValueError, match="was trained on bundle"):
        L.load_lora(other, d, base_key="another-bundle")
    # xr2ct generate --lora: the same volume, in HU
    png = tmp_path / "x.png"
    yy, xx = np.mgrid[0:48, 0:40]
    Image.fromarray((120 + 90 * np.sin(yy / 6) * np.cos(xx / 4)).astype(np.uint8)).save(png)
    xin = torch.as_tensor(read_and_preprocess_cxr(png, PROFILE.cxr_size))[None]
    want = PAPER_WINDOW.to_hu(_sample(again, xin, seed=7))
    out = tmp_path / "g.nii.gz"
    cmd = [sys.executable, "-m", "xr2ct_lib.cli", "generate", "--cxr", str(png), "--checkpoint",
           str(b), "--out", str(out), "--seed", "7", "--lora", str(d)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_array_equal(read_ct(out).array, want)
