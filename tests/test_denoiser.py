"""The 3D latent denoiser: shapes, conditioning, factorised attention, storage."""

from __future__ import annotations

import pytest
import torch

from xr2ct_lib.config import PROFILES
from xr2ct_lib.models.denoiser import (
    LatentDenoiser3D,
    SpatialAttention,
    TemporalAttention,
    timestep_embedding,
)

SHAPE = (4, 6, 8, 8)  # C, D, h, w (D need not be a power of two: only h, w are downsampled)


def tiny(**kw) -> LatentDenoiser3D:
    torch.manual_seed(0)
    args = {"in_channels": 4, "channels": (8, 16), "cond_dim": 32, "attention_head_dim": 8}
    args.update(kw)
    return LatentDenoiser3D(**args).eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(2, *SHAPE, generator=g),
        torch.tensor([3, 700]),
        torch.randn(2, 32, generator=g),
        torch.tensor([0, 1]),
    )


@pytest.mark.parametrize("mode", ["none", "cond", "cond+label", "dropped"])
def test_shapes_for_each_conditioning_mode(batch, mode):
    x, t, cond, label = batch
    model = tiny(num_classes=2)
    kwargs = {
        "none": {},
        "cond": {"cond": cond},
        "cond+label": {"cond": cond, "label": label},
        "dropped": {"cond": cond, "label": label, "drop_mask": torch.tensor([True, True])},
    }[mode]
    with torch.no_grad():
        y = model(x, t, **kwargs)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_conditioning_changes_the_output(batch):
    x, t, cond, label = batch
    model = tiny(num_classes=2)
    with torch.no_grad():
        y_c = model(x, t, cond=cond)
        y_c2 = model(x, t, cond=cond.flip(0))
        y_none = model(x, t)
        y_drop = model(x, t, cond=cond, drop_mask=torch.tensor([True, True]))
        y_lab = model(x, t, cond=cond, label=label)
        y_lab2 = model(x, t, cond=cond, label=1 - label)
        y_half = model(x, t, cond=cond, drop_mask=torch.tensor([True, False]))
        y_t = model(x, t + 100, cond=cond)
    assert (y_c - y_c2).abs().amax() > 1e-4  # another X-ray, another prediction
    assert (y_c - y_none).abs().amax() > 1e-4
    assert (y_lab - y_lab2).abs().amax() > 1e-4  # the label embedding reaches the output
    assert (y_c - y_t).abs().amax() > 1e-4  # the timestep too
    # dropping = the learned null embedding = no condition at all
    torch.testing.assert_close(y_drop, y_none)
    # dropping acts per sample
    torch.testing.assert_close(y_half[0], y_none[0])
    torch.testing.assert_close(y_half[1], y_c[1])


def test_condition_reaches_every_resnet_block(batch):
    """The embedding [time ‖ CXR] feeds the scale–shift of every ResNet block at every level."""
    from xr2ct_lib.models.denoiser import ResBlock3D

    model = tiny(num_classes=2)
    blocks = [m for m in model.modules() if isinstance(m, ResBlock3D)]
    emb_dim = model.embed(batch[1], 2, batch[2], batch[3]).shape[1]
    assert emb_dim == 4 * 8 + 32 + 64  # time MLP + CXR embedding + label embedding
    assert len(blocks) == 2 * 1 + 2 + 2 * 2  # down, middle, up
    assert all(b.emb[1].in_features == emb_dim for b in blocks)


def test_unconditional_model_and_bad_inputs(batch):
    x, t, cond, label = batch
    model = tiny(cond_dim=0)
    with torch.no_grad():
        assert model(x, t).shape == x.shape
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, cond=cond)
    with pytest.raises(ValueError, match="num_classes"):
        model(x, t, label=label)
    cmodel = tiny()
    with pytest.raises(ValueError, match="cond must have shape"):
        cmodel(x, t, cond=cond[:, :16])
    with pytest.raises(ValueError, match="divisible"):
        cmodel(torch.randn(1, 4, 4, 5, 5), torch.tensor([1]))
    with pytest.raises(ValueError, match="attention_levels"):
        LatentDenoiser3D(channels=(8, 16), attention_levels=(True,))


def test_training_mode_drops_conditions_with_the_given_probability(batch):
    x, t, cond, _ = batch
    model = tiny(cond_drop_prob=1.0).train()
    torch.manual_seed(0)
    with torch.no_grad():
        y = model(x, t, cond=cond)
        y_none = model(x, t)
    torch.testing.assert_close(y, y_none)
    model.cond_drop_prob = 0.0
    with torch.no_grad():
        assert (model(x, t, cond=cond) - y_none).abs().amax() > 1e-4


@pytest.mark.parametrize("profile", ["smoke", "workshop", "paper"])
def test_profile_latent_shapes(profile):
    p = PROFILES[profile]
    torch.manual_seed(0)
    model = LatentDenoiser3D(p.latent_shape[0], p.unet_channels, cond_dim=p.cxr_embed_dim).eval()
    x = torch.randn(1, *p.latent_shape)
    with torch.no_grad():
        y = model(x, torch.tensor([500]), cond=torch.randn(1, p.cxr_embed_dim))
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def naive_attention(tokens, attn):
    """Independent multi-head attention from the module's weights (einsum, explicit softmax)."""
    n, length, c = tokens.shape
    qkv = tokens @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv.split(c, dim=-1)
    hd = c // attn.heads

    def split(a):
        return a.reshape(n, length, attn.heads, hd)

    q, k, v = split(q), split(k), split(v)
    scores = torch.einsum("nlhd,nmhd->nhlm", q, k) / hd**0.5
    return scores, v


def test_spatial_attention_matches_naive_and_stays_within_slices():
    torch.manual_seed(0)
    attn = SpatialAttention(16, head_dim=8).eval()
    x = torch.randn(2, 16, 3, 4, 5)
    with torch.no_grad():
        y = attn(x)
        tokens = attn.norm(x.permute(0, 2, 3, 4, 1).reshape(6, 20, 16))
        scores, v = naive_attention(tokens, attn)
        o = torch.einsum("nhlm,nmhd->nlhd", scores.softmax(-1), v).reshape(6, 20, 16)
        o = attn.out(o).reshape(2, 3, 4, 5, 16).permute(0, 4, 1, 2, 3)
        torch.testing.assert_close(y, x + o, atol=1e-5, rtol=1e-5)
        # perturbing slice 0 leaves the other slices' outputs unchanged
        x2 = x.clone()
        x2[:, :, 0] += torch.randn_like(x2[:, :, 0])
        y2 = attn(x2)
    torch.testing.assert_close(y2[:, :, 1:], y[:, :, 1:])
    assert (y2[:, :, 0] - y[:, :, 0]).abs().amax() > 1e-3


def test_temporal_attention_matches_naive_and_stays_within_columns():
    torch.manual_seed(0)
    attn = TemporalAttention(16, head_dim=8, max_distance=2).eval()
    torch.nn.init.normal_(attn.rel_bias.weight)
    x = torch.randn(2, 16, 6, 3, 3)
    with torch.no_grad():
        y = attn(x)
        tokens = attn.norm(x.permute(0, 3, 4, 2, 1).reshape(18, 6, 16))
        scores, v = naive_attention(tokens, attn)
        for i in range(6):  # relative bias by hand, distance clamped to ±2
            for j in range(6):
                rel = max(-2, min(2, j - i)) + 2
                scores[:, :, i, j] += attn.rel_bias.weight[rel]
        o = torch.einsum("nhlm,nmhd->nlhd", scores.softmax(-1), v).reshape(18, 6, 16)
        o = attn.out(o).reshape(2, 3, 3, 6, 16).permute(0, 4, 3, 1, 2)
        torch.testing.assert_close(y, x + o, atol=1e-5, rtol=1e-5)
        # perturbing one in-plane position changes only that position's column of slices
        x2 = x.clone()
        x2[..., 1, 2] += torch.randn_like(x2[..., 1, 2])
        y2 = attn(x2)
    changed = (y2 - y).abs().amax(dim=(0, 1, 2)) > 1e-6
    assert changed.nonzero().tolist() == [[1, 2]]


def test_timestep_embedding_is_sinusoidal():
    e = timestep_embedding(torch.tensor([0.0, 10.0]), 8)
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10_000.0)) * torch.arange(4) / 4)
    torch.testing.assert_close(e[1, :4], torch.cos(10 * freqs))


def test_save_load_round_trip(tmp_path, batch):
    x, t, cond, label = batch
    model = tiny(num_classes=2, attention_levels=(True, True))
    model.save(tmp_path / "den")
    loaded = LatentDenoiser3D.load(tmp_path / "den").eval()
    assert loaded.config_dict() == model.config_dict()  # the constructor arguments
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, cond, label), model(x, t, cond, label))
    assert not list(tmp_path.glob("*.pt")) and (tmp_path / "den" / "model.safetensors").is_file()


def test_projection_standardises_the_condition_per_feature(batch, tmp_path):
    """Features of very different scales move the output alike once standardised, the
    statistics travel with the weights, and constant features (padding) are ignored."""
    x, t, _, _ = batch
    model = tiny(cond_embed_type="projection")
    g = torch.Generator().manual_seed(2)
    train = torch.randn(50, 32, generator=g) * torch.logspace(-3, 0, 32)
    train[:, -4:] = 0.0  # zero padding, as the reader encoder's
    model.set_condition_statistics(train)
    torch.testing.assert_close(model.cond_scale[-4:], torch.zeros(4))
    base = train[:2].clone()
    with torch.no_grad():
        y0 = model(x, t, cond=base)
        tiny_feature, big_feature = base.clone(), base.clone()
        tiny_feature[:, 0] += 3 * train[:, 0].std()  # a 0.001-scale feature moved 3 sd
        big_feature[:, 27] += 3 * train[:, 27].std()  # a 1-scale feature moved 3 sd
        d_tiny = (model(x, t, cond=tiny_feature) - y0).abs().mean()
        d_big = (model(x, t, cond=big_feature) - y0).abs().mean()
        padded = base.clone()
        padded[:, -1] = 5.0
        torch.testing.assert_close(model(x, t, cond=padded), y0)
    assert d_tiny > 0 and 0.2 < float(d_tiny / d_big) < 5
    model.save(tmp_path / "den")
    loaded = LatentDenoiser3D.load(tmp_path / "den").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, cond=base), y0)


def test_projection_starts_from_a_reference_denoiser(batch):
    """A reference-style (raw condition) denoiser's weights load into a projection one; only
    the projection's own tensors are new, and a mismatch elsewhere is refused."""
    x, t, cond, _ = batch
    raw = tiny()
    proj = tiny(cond_embed_type="projection")
    new = proj.load_pretrained_state(raw.state_dict())
    assert new and all(k.startswith(("cond_shift", "cond_scale", "cond_mlp.")) for k in new)
    with torch.no_grad():  # unconditional (dropped) predictions are the reference's exactly
        drop = torch.tensor([True, True])
        torch.testing.assert_close(
            proj(x, t, cond=cond, drop_mask=drop), raw(x, t, cond=cond, drop_mask=drop)
        )
    with pytest.raises(ValueError, match="does not fit"):
        tiny(channels=(8, 24), cond_embed_type="projection").load_pretrained_state(raw.state_dict())
    with pytest.raises(ValueError, match="projection"):
        raw.set_condition_statistics(torch.randn(4, 32))
