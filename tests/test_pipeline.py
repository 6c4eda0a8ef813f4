"""The run-level diffusion pipeline on a tiny run directory built here, and the CLI generator."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from xr2ct_lib.config import PROFILES, RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.models import latents as ae
from xr2ct_lib.models.cxr_encoder import StandinCXREncoder
from xr2ct_lib.models.vae import make_standin_vae
from xr2ct_lib.train import pipeline as pl

PROFILE = dataclasses.replace(
    PROFILES["smoke"], ct_size=(8, 16, 16), vae_channels=(8, 8), cxr_size=32,
    cxr_embed_dim=32, unet_channels=(8, 16), train_steps=(3, 2, 3), batch_size=2,
    sample_steps_fast=3,
)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """12 patients: prepared tensors, VAE, latents, encoder and embeddings, as chapters 1–3."""
    d = tmp_path_factory.mktemp("run")
    cfg = RunConfig(PROFILE, d / "manifest.csv", d, seed=0)
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(12)]
    (d / "prepared").mkdir()
    for pid in ids:
        arrays = {"ct": rng.uniform(-1, 1, PROFILE.ct_size), "cxr": rng.random((3, 32, 32)),
                  "drr": rng.random((3, 32, 32)), "clot": np.zeros(PROFILE.ct_size),
                  "lung": np.ones(PROFILE.ct_size)}  # fmt: skip
        save_file({k: torch.tensor(v, dtype=torch.float32) for k, v in arrays.items()},
                  str(d / "prepared" / f"{pid}.safetensors"))  # fmt: skip
    index = pd.DataFrame({"patient_id": ids, "pe_label": [i % 3 == 0 for i in range(12)],
                          "fold": [i % 6 for i in range(12)], "source": "phantom"})  # fmt: skip
    index.astype({"pe_label": int}).to_csv(d / "prepared" / "index.csv", index=False)
    cohort = PreparedCohort(d)
    torch.manual_seed(0)
    vae = make_standin_vae(PROFILE)
    vae.save(d / "models" / "vae")
    ae.encode_cohort(cfg, vae, cohort)
    enc = StandinCXREncoder(PROFILE.cxr_embed_dim, width=4, in_size=32).eval()
    enc.save(d / "models" / "encoder")
    from xr2ct_lib.train.encoder import embed_cohort

    embed_cohort(cfg, enc, cohort)
    return cfg


def test_train_generate_reuse_and_determinism(run):
    model, hist = pl.train_xray2ctpa(run)
    assert list(hist["stage"].unique()) == ["uncond", "drr", "cxr"] and len(hist) == 8
    assert np.isfinite(hist["l1"]).all()
    bundle = run.run_dir / "models" / "bundle"
    assert {"profile.json", "normalizer.json", "denoiser", "vae", "encoder"} <= {
        p.name for p in bundle.iterdir()
    }
    # a finished run with the same recipe is reloaded, not retrained
    mtime = (bundle / "denoiser" / "model.safetensors").stat().st_mtime_ns
    again, hist2 = pl.train_xray2ctpa(run)
    assert (bundle / "denoiser" / "model.safetensors").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(hist2, hist, check_dtype=False)
    t = pl.generate_patients(run, again, ["P00", "P06"])
    assert len(t) == 2 and (t.seconds > 0).all()
    gen = load_generated(run)
    assert gen["P00"]["ct"].shape == PROFILE.ct_size
    assert gen["P00"]["z"].shape == (2, *PROFILE.latent_shape)
    assert gen["P00"]["ct"].min() >= -1 and gen["P00"]["ct"].max() <= 1
    first = gen["P00"]["ct"].copy()
    pl.generate_patients(run, again, ["P00"])
    np.testing.assert_array_equal(load_generated(run)["P00"]["ct"], first)  # same seed
    assert not np.array_equal(gen["P06"]["ct"], first)
    assert pl.sample_unconditional(run, again, 3).shape == (3, *PROFILE.latent_shape)


def test_generate_cli_writes_nifti_and_rejects_bad_input(run, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    from xr2ct_lib.data.io import read_ct

    pl.train_xray2ctpa(run)
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
