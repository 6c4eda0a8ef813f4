"""The CXR encoders: shapes, determinism, checkpoints, the open_clip loader, retrieval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from xr2ct_lib.eval.retrieval import retrieval_accuracy
from xr2ct_lib.models.cxr_encoder import OpenCLIPImageEncoder, StandinCXREncoder, load_encoder
from xr2ct_lib.train.encoder import LatentProjector, info_nce


def test_standin_shape_unit_norm_determinism_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    enc = StandinCXREncoder(512, width=8, in_size=64).eval()
    x = torch.rand(3, 3, 64, 64)
    e = enc.embed(x)
    assert e.shape == (3, 512)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(enc.embed(x), e)
    enc.save(tmp_path / "enc")
    torch.testing.assert_close(load_encoder(tmp_path / "enc").embed(x), e)
    assert not torch.allclose(e[0], e[1])
    with pytest.raises(ValueError, match="3, S, S"):
        enc.embed(torch.rand(2, 1, 64, 64))


def test_open_clip_loader_reads_local_weights(tmp_path):
    """A tiny CLIP in open_clip's local-dir layout stands in for BiomedCLIP's files."""
    from open_clip.model import CLIP

    model_cfg = {
        "embed_dim": 512,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 64,
            "patch_size": 16,
            "head_width": 32,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    }
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(1)
    ref = CLIP(**model_cfg).eval()
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(tmp_path / "open_clip_model.safetensors"))
    enc = OpenCLIPImageEncoder.from_local(tmp_path)
    x = torch.rand(2, 3, 32, 32)
    expected = torch.nn.functional.normalize(ref.encode_image((x - 0.5) / 0.25), dim=-1)
    torch.testing.assert_close(enc.embed(x), expected)  # the saved weights were loaded
    enc.save(tmp_path / "saved")
    torch.testing.assert_close(load_encoder(tmp_path / "saved").embed(x), expected)
    with pytest.raises(FileNotFoundError, match="not available locally"):
        OpenCLIPImageEncoder.from_local("local-dir:" + str(tmp_path / "absent"))


def test_retrieval_accuracy_perfect_and_chance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 16))
    r = retrieval_accuracy(a, a)
    assert r["top1"] == 1 and r["top5"] == 1 and r["chance_top1"] == pytest.approx(0.05)
    tops = [retrieval_accuracy(rng.normal(size=(20, 16)), rng.normal(size=(20, 16)))["top5"]
            for _ in range(200)]  # fmt: skip
    assert abs(np.mean(tops) - 0.25) < 0.04


def test_contrastive_training_aligns_pairs():
    torch.manual_seed(0)
    z = torch.randn(16, 2, 4, 8, 8, 8)
    x = torch.rand(16, 3, 64, 64)
    x[:, :, :8, :8] = z[:, 0, 0, 0, :8, :8].sigmoid()[:, None]  # images carry their latent
    enc, proj = StandinCXREncoder(64, width=8, in_size=64), LatentProjector(4, 64)
    opt = torch.optim.Adam(list(enc.parameters()) + list(proj.parameters()), lr=2e-3)
    before = float(info_nce(enc(x), proj(z)).detach())
    for _ in range(60):
        loss = info_nce(enc(x), proj(z))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * before
    with torch.no_grad():
        assert retrieval_accuracy(enc(x), proj(z))["top1"] > 0.5
