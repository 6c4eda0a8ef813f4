"""Image-quality metrics (FVD, PSNR, SSIM, LPIPS) and their feature-network loaders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity
from torch import nn

from xr2ct_lib.eval import frechet
from xr2ct_lib.eval import metrics as M
from xr2ct_lib.models.i3d import I3D_ENV, I3DFeatureExtractor, InceptionI3d, find_i3d, load_i3d
from xr2ct_lib.models.lpips_net import LPIPS_ENV, LPIPSNet, find_lpips, load_lpips


def smooth_volume(rng: np.random.Generator, shape=(16, 24, 24), sigma=2.0, amp=0.6) -> np.ndarray:
    v = gaussian_filter(rng.standard_normal(shape), sigma)
    return (amp * v / np.abs(v).max()).astype(np.float32)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No real weights anywhere: empty HOME, no env overrides."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(I3D_ENV, raising=False)
    monkeypatch.delenv(LPIPS_ENV, raising=False)


def randomize_bn(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


# ------------------------------------------------------------------------------ PSNR / SSIM


def test_identical_volumes_psnr_inf_ssim_one():
    rng = np.random.default_rng(0)
    v = smooth_volume(rng)
    assert M.psnr(v, v).tolist() == [math.inf]
    assert M.psnr(v, v, cap=100.0).tolist() == [100.0]
    batch = torch.from_numpy(np.stack([v, -v]))[:, None]
    np.testing.assert_allclose(M.ssim(batch, batch), [1.0, 1.0], atol=1e-5)
    assert M.ssim(batch, batch).shape == (2,)


def test_psnr_matches_noise_sigma():
    rng = np.random.default_rng(1)
    sigmas = [0.02, 0.05, 0.1]
    # values in [-0.6, 0.6]: 4 sigma away from the clipping borders for the largest sigma
    target = np.stack([smooth_volume(rng, (32, 32, 32)) for _ in sigmas])[:, None]
    noise = np.stack([s * rng.standard_normal((32, 32, 32)) for s in sigmas])[:, None]
    pred = (target + noise).astype(np.float32)
    got = M.psnr(pred, target)
    expected = [10 * math.log10(2.0**2 / s**2) for s in sigmas]
    np.testing.assert_allclose(got, expected, atol=0.15)  # MSE sampling error ~0.03 dB
    assert np.all(np.diff(got) < -5)


@pytest.mark.parametrize(
    "kwargs, sk_kwargs",
    [
        ({}, {"win_size": 7}),
        (
            {"kernel_type": "gaussian", "win_size": 11, "kernel_sigma": 1.5},
            {"gaussian_weights": True, "sigma": 1.5},
        ),
    ],
)
def test_ssim_matches_skimage_3d(kwargs, sk_kwargs):
    rng = np.random.default_rng(2)
    target = [smooth_volume(rng) for _ in range(2)]
    pred = [np.clip(t + smooth_volume(rng, sigma=1.0, amp=0.3), -1, 1) for t in target]
    got = M.ssim(np.stack(pred)[:, None], np.stack(target)[:, None], **kwargs)
    ref = [
        structural_similarity(
            t.astype(np.float64),
            p.astype(np.float64),
            data_range=2.0,
            use_sample_covariance=False,
            **sk_kwargs,
        )
        for p, t in zip(pred, target, strict=True)
    ]
    np.testing.assert_allclose(got, ref, atol=2e-4)
    assert 0.2 < got.min() < 0.99


def test_bad_inputs_fail_clearly():
    v = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="not HU"):
        M.psnr(v + 500, v)
    with pytest.raises(ValueError, match="differ in shape"):
        M.psnr(v, v[:4])
    with pytest.raises(ValueError, match=r"\(D, H, W\) or \(N, 1, D, H, W\)"):
        M.ssim(v[None], v[None])
    with pytest.raises(ValueError, match="window"):
        M.ssim(v[:4], v[:4])


# ------------------------------------------------------------------------------ Fréchet


def closed_form_commuting(mu1, mu2, eig1, eig2) -> float:
    """FD for covariances R diag(eig) R^T sharing eigenvectors: |dmu|² + sum (√a - √b)²."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(eig1) - np.sqrt(eig2)) ** 2))


def test_frechet_distance_closed_form_gaussians():
    rng = np.random.default_rng(3)
    d = 5
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    e1, e2 = rng.uniform(0.5, 3, d), rng.uniform(0.5, 3, d)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # shared rotation: non-diagonal covariances
    s1, s2 = q @ np.diag(e1) @ q.T, q @ np.diag(e2) @ q.T
    expected = closed_form_commuting(mu1, mu2, e1, e2)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet._frechet_distance_symmetric(mu1, s1, mu2, s2) == pytest.approx(
        expected, rel=1e-8
    )
    # 1D: (m1-m2)² + (s1-s2)²
    assert M.frechet_distance([0.0], [[4.0]], [1.0], [[9.0]]) == pytest.approx(1 + 1)

    # from samples of the two Gaussians
    n = 40000
    f1 = rng.multivariate_normal(mu1, s1, n)
    f2 = rng.multivariate_normal(mu2, s2, n)
    assert M.frechet_distance_from_features(f1, f2) == pytest.approx(expected, rel=0.03)
    assert M.frechet_distance_from_features(f1, f1) == pytest.approx(0, abs=1e-8)


@pytest.mark.filterwarnings("ignore:Fréchet distance from")
def test_frechet_fallback_agrees_on_general_covariances():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu = rng.normal(size=6)
    assert M.frechet_distance(mu, s1, 0 * mu, s2) == pytest.approx(
        frechet._frechet_distance_symmetric(mu, s1, 0 * mu, s2), rel=1e-7
    )
    # fewer samples than dimensions: singular covariances still give a finite, >= 0 value
    f1, f2 = rng.normal(size=(5, 50)), rng.normal(size=(5, 50)) + 0.5
    with pytest.warns(UserWarning, match="covariances are singular"):
        fd = M.frechet_distance_from_features(f1, f2)
    assert np.isfinite(fd) and fd > 0
    trace = np.trace(np.cov(f1, rowvar=False))  # ~50; sqrtm of a rank-4 matrix: ~1e-7 relative
    assert M.frechet_distance_from_features(f1, f1) == pytest.approx(0, abs=1e-6 * trace)


def test_metric_result_formatting():
    r = M.MetricResult("FVD", np.array([100.0, 300.0, 470.0]), "x", display_scale=1e-3)
    assert r.fmt() == f"{r.mean / 1000:.2f} ± {r.std / 1000:.2f}" == "0.29 ± 0.19"
    assert M.MetricResult("SSIM", [0.5], "").fmt() == "0.50"


# ------------------------------------------------------------------------------ I3D


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    torch.manual_seed(0)
    model = InceptionI3d().eval()
    randomize_bn(model, 1)
    path = tmp_path_factory.mktemp("w") / "i3d_400.safetensors"
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(sd, str(path))
    return model, path


def test_i3d_loader_round_trip(i3d_file):
    model, path = i3d_file
    x = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    ext = load_i3d(path, input_size=32)
    with torch.no_grad():
        y, ref = ext(x), model(x)
        fresh = InceptionI3d().eval()(x)
    assert y.shape == (2, 400)
    torch.testing.assert_close(y, ref)
    assert (y - fresh).abs().max() > 1e-3
    pooled = load_i3d(path, features="pool")(x)
    assert pooled.shape == (2, 1024)
    assert "weights from" in ext.describe() and str(path) in ext.describe()


def test_i3d_loader_rejects_bad_files(i3d_file, tmp_path):
    _, path = i3d_file
    from safetensors.torch import load_file

    sd = load_file(str(path))
    del sd["Mixed_4c.b1b.conv3d.weight"]
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(KeyError, match="Mixed_4c.b1b.conv3d.weight"):
        load_i3d(bad)
    sd = load_file(str(path))
    sd["logits.conv3d.bias"] = torch.zeros(10)
    save_file(sd, str(bad))
    with pytest.raises(ValueError, match="wrong shape"):
        load_i3d(bad)
    with pytest.raises(FileNotFoundError):
        load_i3d(tmp_path / "absent.safetensors")


def test_find_i3d(i3d_file, no_weights, monkeypatch):
    assert find_i3d() is None
    monkeypatch.setenv(I3D_ENV, str(i3d_file[1]))
    assert find_i3d() == i3d_file[1]


@pytest.mark.filterwarnings("ignore:Fréchet distance from")
def test_fvd_with_loaded_i3d_and_standin(i3d_file):
    rng = np.random.default_rng(5)
    real = np.stack([smooth_volume(rng, (16, 24, 24)) for _ in range(4)])[:, None]
    fake = np.clip(real + 0.4 * rng.standard_normal(real.shape), -1, 1).astype(np.float32)
    ext = load_i3d(i3d_file[1], input_size=32)
    r = M.fvd(real, fake, ext)
    assert r.name == "FVD" and r.values.shape == (1,) and r.values[0] > 0
    assert r.extra["feature_dim"] == 400
    same = M.fvd(real, real, ext)
    assert abs(same.values[0]) < 1e-6 * r.values[0]
    # an I3D without loaded weights is not the real FVD
    fresh = M.fvd(real, fake, I3DFeatureExtractor(InceptionI3d(), input_size=32))
    assert fresh.name == "FD-standin" and "random init" in fresh.feature_net

    enc = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool3d(2))
    net = M.FeatureNet("tiny-enc", enc, "tiny random 3D conv encoder (test)")
    s = M.fvd(real, fake, net, n_subsets=3, subset_size=3)
    assert s.name == "FD-standin" and s.values.shape == (3,) and s.feature_net == net.description
    assert "±" in s.fmt()


def test_fvd_lpips_without_weights_raise(no_weights):
    v = np.zeros((2, 1, 8, 8, 8), np.float32)
    with pytest.raises(RuntimeError, match="XR2CT_I3D_WEIGHTS"):
        M.fvd(v, v)
    with pytest.raises(RuntimeError, match="FeatureNet"):
        M.lpips(v, v)
    assert find_lpips() is None


# ------------------------------------------------------------------------------ LPIPS


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    torch.manual_seed(1)
    model = LPIPSNet("alex")
    with torch.no_grad():
        for i in range(5):  # trained lpips heads are non-negative
            w = model._modules[f"lin{i}"].model[1].weight
            w.copy_(torch.rand(w.shape))
    d = tmp_path_factory.mktemp("lp")
    backbone = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 4)  # full torchvision files carry these
    save_file(backbone, str(d / "lpips_alex_backbone.safetensors"))
    heads = {k: v for k, v in model.state_dict().items() if k.startswith("lin")}
    save_file(heads, str(d / "lpips_alex_heads.safetensors"))
    return model, d


def test_lpips_loader_round_trip(lpips_files, monkeypatch):
    model, d = lpips_files
    monkeypatch.setenv(LPIPS_ENV, str(d))
    paths = find_lpips()
    assert paths == (d / "lpips_alex_backbone.safetensors", d / "lpips_alex_heads.safetensors")
    net = load_lpips(*paths)
    x, y = torch.rand(2, 3, 48, 48) * 2 - 1, torch.rand(2, 3, 48, 48) * 2 - 1
    out = net(x, y)
    assert out.shape == (2,)
    torch.testing.assert_close(out, model(x, y))
    assert (out - LPIPSNet("alex")(x, y)).abs().max() > 1e-4
    assert net.source and "weights from" in net.describe()


def test_lpips_loader_rejects_missing_head(lpips_files, tmp_path):
    _, d = lpips_files
    from safetensors.torch import load_file

    heads = load_file(str(d / "lpips_alex_heads.safetensors"))
    del heads["lin3.model.1.weight"]
    save_file(heads, str(tmp_path / "h.safetensors"))
    with pytest.raises(KeyError, match="lin3.model.1.weight"):
        load_lpips(d / "lpips_alex_backbone.safetensors", tmp_path / "h.safetensors")


def test_lpips_net_matches_independent_computation(lpips_files):
    """LPIPSNet = sum_l mean_hw(w_l · (f̂x - f̂y)²) on torchvision AlexNet ReLU outputs."""
    from torchvision.models import alexnet
    from torchvision.models.feature_extraction import create_feature_extractor

    model, _ = lpips_files
    ref_net = alexnet(weights=None)
    ref_net.features.load_state_dict(model.features.state_dict())
    nodes = ["features.1", "features.4", "features.7", "features.9", "features.11"]
    extractor = create_feature_extractor(ref_net.eval(), nodes)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    x, y = torch.rand(3, 3, 40, 40) * 2 - 1, torch.rand(3, 3, 40, 40) * 2 - 1
    with torch.no_grad():
        fx, fy = extractor((x - shift) / scale), extractor((y - shift) / scale)
        expected = torch.zeros(3)
        for i, n in enumerate(nodes):
            a = fx[n] / (fx[n].norm(dim=1, keepdim=True) + 1e-10)
            b = fy[n] / (fy[n].norm(dim=1, keepdim=True) + 1e-10)
            w = model._modules[f"lin{i}"].model[1].weight.view(1, -1, 1, 1)
            expected += (w * (a - b) ** 2).sum(1).mean(dim=(1, 2))
        torch.testing.assert_close(model(x, y), expected, rtol=1e-5, atol=1e-6)


def test_lpips_metric_zero_for_identical_and_grows_with_noise(lpips_files):
    model, d = lpips_files
    net = load_lpips(d / "lpips_alex_backbone.safetensors", d / "lpips_alex_heads.safetensors")
    rng = np.random.default_rng(6)
    target = np.stack([smooth_volume(rng, (32, 32, 32)) for _ in range(2)])[:, None]
    same = M.lpips(target, target, net, max_slices_per_plane=4)
    assert same.name == "LPIPS" and same.values.shape == (2,)
    np.testing.assert_allclose(same.values, 0, atol=1e-6)
    means = []
    for sigma in (0.02, 0.1, 0.4):
        noisy = np.clip(target + sigma * rng.standard_normal(target.shape), -1, 1)
        means.append(M.lpips(noisy, target, net, max_slices_per_plane=4).mean)
    assert means[0] > 0 and means[0] < means[1] < means[2]

    conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
    standin = M.FeatureNet("tiny-2d", conv, "tiny random 2D conv (test)")
    s0 = M.lpips(target, target, standin, max_slices_per_plane=4)
    s1 = M.lpips(noisy, target, standin, max_slices_per_plane=4)
    assert s0.name == s1.name == "LPIPS-standin"
    np.testing.assert_allclose(s0.values, 0, atol=1e-6)
    assert s1.mean > 0
    assert M.lpips(target, target, LPIPSNet("alex"), max_slices_per_plane=2).name == (
        "LPIPS-standin"
    )


def test_plane_slices_subsample_each_axis():
    vol = torch.arange(6 * 8 * 10, dtype=torch.float32).view(1, 6, 8, 10)
    ax = M.plane_slices(vol, "axial", 3)
    assert ax.shape == (3, 1, 8, 10)
    torch.testing.assert_close(ax[-1, 0], vol[0, 5])
    assert M.plane_slices(vol, "coronal", None).shape == (8, 1, 6, 10)
    assert M.plane_slices(vol, "sagittal", 4).shape == (4, 1, 6, 8)


@pytest.mark.filterwarnings("ignore:Fréchet distance from")
def test_quality_table_names_standins():
    rng = np.random.default_rng(7)
    target = np.stack([smooth_volume(rng, (16, 32, 32)) for _ in range(3)])[:, None]
    pred = np.clip(target + 0.1 * rng.standard_normal(target.shape), -1, 1).astype(np.float32)
    enc = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool3d(1))
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    df = M.quality_table(
        pred,
        target,
        fvd_net=M.FeatureNet("enc3d", enc, "test 3D encoder"),
        lpips_net=M.FeatureNet("enc2d", conv, "test 2D encoder"),
        label="CTPA",
        lpips_kwargs={"max_slices_per_plane": 2},
    )
    assert list(df.columns) == ["FD-standin", "PSNR", "SSIM", "LPIPS-standin"]
    assert df.index.tolist() == ["CTPA"]
    assert " ± " in df.loc["CTPA", "PSNR"] and " ± " in df.loc["CTPA", "SSIM"]
    psnr_vals = df.attrs["results"]["PSNR"].values
    np.testing.assert_allclose(psnr_vals, M.psnr(pred, target))
    assert df.attrs["feature_nets"]["LPIPS-standin"] == "test 2D encoder"


def test_lpips_small_slices_need_resize():
    v = np.zeros((1, 1, 16, 32, 32), np.float32)
    with pytest.raises(ValueError, match="resize_to"):
        M.lpips(v, v, LPIPSNet("alex"), max_slices_per_plane=2)
    r = M.lpips(v, v + 0.1, LPIPSNet("alex"), max_slices_per_plane=2, resize_to=32)
    assert r.values.shape == (1,) and np.isfinite(r.values).all()


def test_lpips_without_trained_heads_is_a_non_negative_distance():
    torch.manual_seed(0)
    net = LPIPSNet("alex")
    x, y = torch.rand(3, 3, 40, 40) * 2 - 1, torch.rand(3, 3, 40, 40) * 2 - 1
    d = net(x, y)
    assert (d > 0).all()
    torch.testing.assert_close(net(x, x), torch.zeros(3))
    assert (net(x, x + 0.5 * (y - x)) < d).all()  # halfway is closer


def test_tiny_metric_values_are_written_in_powers_of_ten():
    r = M.MetricResult("FD-standin", [9.0e-7, 1.02e-6], "")
    assert r.fmt() == "9.6 ± 0.8 ×10⁻⁷"
    assert M.MetricResult("FD-standin", [3e-5], "").fmt() == "3.0 ×10⁻⁵"
    assert M.MetricResult("SSIM", [0.05, 0.07], "").fmt() == "0.060 ± 0.014"
