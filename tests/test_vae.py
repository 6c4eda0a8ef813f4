"""Slice-wise VAE, 3D compressor and latent caching."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import AutoencoderKL

from xr2ct_lib.config import PROFILES, RunConfig
from xr2ct_lib.data.preprocess import merge_halves
from xr2ct_lib.models.compressor3d import Compressor3D, load_compressor3d
from xr2ct_lib.models.normalizer import LatentNormalizer
from xr2ct_lib.models.vae import (
    SliceVAE,
    decode_slicewise,
    load_sd_vae,
    load_vae,
    make_standin_vae,
)
from xr2ct_lib.run import latents
from xr2ct_lib.train import autoencoder as ae
from xr2ct_lib.train.cache import TrainCache

SMOKE = PROFILES["smoke"]


def _volumes(n=6, size=(16, 32, 32), seed=0):
    """Smooth random 'anatomy': blurred noise plus a bright disc, in [−1, 1]."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    vols = []
    yy, xx = np.mgrid[: size[1], : size[2]]
    for _ in range(n):
        v = gaussian_filter(rng.normal(size=size), 2)
        v = v / np.abs(v).max() * 0.5
        cy, cx = rng.integers(8, 24, 2)
        v[:, (yy - cy) ** 2 + (xx - cx) ** 2 < 20] = 0.8
        vols.append(v.astype(np.float32))
    return np.stack(vols)


def test_standin_latent_shape_and_round_trip_shapes():
    vae = make_standin_vae(SMOKE)
    half = torch.zeros(SMOKE.half_size)
    z = vae.encode_volume(half)
    assert tuple(z.shape) == SMOKE.latent_shape
    assert tuple(vae.decode_volume(z).shape) == SMOKE.half_size
    assert tuple(vae.decode_slices(z.permute(1, 0, 2, 3)).shape) == (16, 1, 32, 32)
    with pytest.raises(ValueError, match="latent"):
        vae.decode_volume(torch.zeros(3, 4, 8, 8))


class _Cohort:
    """The two things the trainers read from a PreparedCohort."""

    def __init__(self, vols):
        self.vols = vols
        self.ids = [f"P{i}" for i in range(len(vols))]
        self.folds = np.arange(len(vols)) % 6
        self.keys = {pid: f"{pid}-v1" for pid in self.ids}  # the prepared files' keys

    def stored_key(self, pid):
        return self.keys[pid]

    def stack(self, key, idx):
        return self.vols[list(idx)]

    def load(self, pid):
        return {"ct": self.vols[self.ids.index(pid)]}


def test_trained_vae_reconstructs_better_than_untrained(tmp_path):
    vols = _volumes(8)
    profile = dataclasses.replace(SMOKE, ct_size=(16, 32, 32), vae_batch=16)
    cfg = RunConfig(profile, tmp_path / "m.csv", tmp_path, seed=0, weights="trained")
    cohort = _Cohort(vols)
    test = vols[-1]
    untrained = make_standin_vae(profile)
    err0 = np.abs(untrained.reconstruct(test).numpy() - test).mean()
    vae, hist = ae.train_slice_vae(cfg, cohort, range(7), steps=120)
    err1 = np.abs(vae.reconstruct(test).numpy() - test).mean()
    assert err1 < 0.5 * err0, (err0, err1)
    assert hist["l1"].iloc[-10:].mean() < hist["l1"].iloc[:10].mean()
    # saved and reloaded: identical outputs; a second call reuses the checkpoint
    again, hist_again = ae.train_slice_vae(cfg, cohort, range(7), steps=120)
    pd.testing.assert_frame_equal(hist_again, hist)
    x = torch.from_numpy(test[:, None])
    torch.testing.assert_close(again.encode_slices(x), vae.encode_slices(x))
    torch.testing.assert_close(load_vae(tmp_path / "models" / "vae").decode_slices(
        vae.encode_slices(x)), vae.decode_slices(vae.encode_slices(x)))  # fmt: skip
    # latents of both halves, cached with a normaliser from the folds outside the main split's
    # test fold (0) and validation fold (1)
    norm = latents.encode_cohort(cfg, vae, cohort)
    assert norm.extra["excluded_folds"] == [0, 1]
    assert latents.load_normalizer(cfg) == norm
    ids, z = latents.load_latents(cfg, cohort.ids)
    assert ids == cohort.ids and z.shape == (8, 2, 4, 8, 8, 8)
    kept = cohort.folds > 1
    assert norm.min == pytest.approx(z[kept].min())
    assert norm.max == pytest.approx(z[kept].max())
    _, zn = latents.load_latents(cfg, cohort.ids, normalized=True)
    assert zn.dtype == np.float32
    assert zn[kept].min() == pytest.approx(-1) and zn[kept].max() == pytest.approx(1)
    np.testing.assert_allclose(norm.denormalize(zn), z, atol=1e-5)
    halves = [vae.decode_volume(torch.from_numpy(z[0, h])).numpy() for h in range(2)]
    np.testing.assert_allclose(merge_halves(*halves), vae.reconstruct(vols[0]), atol=1e-5)

    # the same VAE on the same prepared files: the latents are kept as written (encoding
    # under another thread count changes their last bits, the normaliser, and the recipe key
    # of the diffusion run trained on them); another VAE or a re-prepared patient: encoded
    def inodes():
        return {f.name: f.stat().st_ino for f in (tmp_path / "latents").iterdir()}

    before = inodes()
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        assert latents.encode_cohort(cfg, vae, cohort).to_dict() == norm.to_dict()
    finally:
        torch.set_num_threads(threads)
    assert inodes() == before
    cohort.keys["P3"] = "P3-v2"
    assert latents.encode_cohort(cfg, vae, cohort).to_dict() == norm.to_dict()
    assert inodes()["P3.safetensors"] != before["P3.safetensors"]
    torch.manual_seed(5)
    other = latents.encode_cohort(cfg, make_standin_vae(profile), cohort)
    assert other.min != norm.min and latents.load_normalizer(cfg) == other


def test_compressor3d_trains_with_the_profile_lr_is_reused_and_is_seeded(tmp_path):
    vols = _volumes(4, (32, 32, 32))
    cohort = _Cohort(vols)
    runs = [
        RunConfig(SMOKE, tmp_path / "m.csv", tmp_path / name, seed=0, weights="trained")
        for name in "ab"
    ]
    model, hist = ae.train_compressor3d(runs[0], cohort, range(3), steps=2)
    assert len(hist) == 2 and np.isfinite(hist[["loss", "l1", "vq"]].to_numpy()).all()
    recipe = json.loads((tmp_path / "a" / "models" / "ae3d" / "recipe.json").read_text())
    expected = TrainCache.for_run(runs[0], "ae3d", cohort.ids[:3], kind="vqvae3d", steps=2,
                                  lr=SMOKE.vae_lr)  # fmt: skip
    assert recipe["key"] == expected.key  # the learning rate is the profile's
    weights = tmp_path / "a" / "models" / "ae3d" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again, hist_again = ae.train_compressor3d(runs[0], cohort, range(3), steps=2)
    assert weights.stat().st_mtime_ns == mtime  # reused, not retrained
    pd.testing.assert_frame_equal(hist_again, hist)
    x = vols[3]
    np.testing.assert_array_equal(again.reconstruct(x), model.eval().reconstruct(x))
    # another run folder, same seed: the same model; more steps: trained again
    other, hist_other = ae.train_compressor3d(runs[1], cohort, range(3), steps=2)
    pd.testing.assert_frame_equal(hist_other, hist)
    np.testing.assert_array_equal(other.reconstruct(x), model.reconstruct(x))
    _, longer = ae.train_compressor3d(runs[0], cohort, range(3), steps=3)
    assert len(longer) == 3 and weights.stat().st_mtime_ns != mtime


def test_latent_io_names_what_is_missing(tmp_path):
    cfg = RunConfig(SMOKE, tmp_path / "m.csv", tmp_path, seed=0, weights="trained")
    with pytest.raises(FileNotFoundError, match="no latents for \\['P1'\\].*notebook 02"):
        latents.load_latents(cfg, ["P1"])
    with pytest.raises(FileNotFoundError, match="normalizer.json not found"):
        latents.load_normalizer(cfg)
    LatentNormalizer(-2.0, 3.0).save(tmp_path / "latents" / "normalizer.json")
    assert latents.load_normalizer(cfg).denormalize(np.float32([-1, 1])).tolist() == [-2, 3]


def test_decode_slicewise_matches_decoding_each_slice_alone():
    torch.manual_seed(0)
    vae = make_standin_vae(SMOKE).eval()
    z = torch.randn(2, *SMOKE.latent_shape)  # (B, C, D, h, w)
    with torch.no_grad():
        slices = vae.decode_latents(z)
        one = vae.decode_slices(z[1, :, 3][None])  # patient 1, slice 3, decoded alone
        volume = vae.decode_volume(z[1])
    d = SMOKE.latent_shape[1]
    assert slices.shape == (2 * d, 1, *SMOKE.half_size[1:])
    torch.testing.assert_close(slices[d + 3], one[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(volume, slices[d:, 0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="B, C, D, h, w"):
        decode_slicewise(vae.decode_slices, z[0])


def test_sd_vae_loader_reads_diffusers_weights_from_a_local_folder(tmp_path):
    tiny = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=4, scaling_factor=0.18215,
    )  # fmt: skip
    tiny.save_pretrained(tmp_path / "sd-vae-ft-mse", safe_serialization=True)
    vae = load_sd_vae(tmp_path / "sd-vae-ft-mse")
    assert isinstance(vae, SliceVAE) and vae.kind == "sd-vae-ft-mse"
    assert vae.scaling_factor == pytest.approx(0.18215)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    expected = tiny.encode(x.expand(-1, 3, -1, -1)).latent_dist.mean * 0.18215
    torch.testing.assert_close(vae.encode_slices(x), expected)
    assert vae.decode_slices(expected).shape == (2, 1, 16, 16)
    with pytest.raises(FileNotFoundError, match="not found locally"):
        load_sd_vae(tmp_path / "absent")


def test_compressor3d_latent_size_trains_and_round_trips(tmp_path):
    model = Compressor3D.for_profile(SMOKE)
    c, d, h, w = SMOKE.latent_shape
    assert model.hparams["embedding_dim"] * 8**3 == 2 * c * d * h * w
    vols = torch.from_numpy(_volumes(2, (32, 32, 32)))[:, None]
    rec, q = model(vols)
    assert rec.shape == vols.shape and torch.isfinite(q)
    model.save(tmp_path / "c")
    back = load_compressor3d(tmp_path / "c")
    torch.testing.assert_close(back.reconstruct(vols[0, 0]), model.eval().reconstruct(vols[0, 0]))
