"""Image-quality metrics of generated CT volumes: FVD, PSNR, SSIM, LPIPS (paper Tables 2-5).

Volumes are in [-1, 1] (the pipeline's CT scaling), shaped ``(D, H, W)`` for one patient or
``(N, 1, D, H, W)`` for a batch, as numpy arrays or torch tensors; axis D is the axial (z) axis.

- :func:`psnr` and :func:`ssim` are per patient (MONAI ``PSNRMetric``/``SSIMMetric``, 3D).
- :func:`lpips` is a 2D perceptual distance on slices of the three planes, per patient.
- :func:`fvd` is a Fréchet distance between the feature statistics of two *sets* of volumes
  (MONAI's Fréchet implementation on I3D features of the axial slice sequence).

FVD and LPIPS need a feature network. The real ones (I3D Kinetics-400, LPIPS AlexNet/VGG) are
looked up locally (:func:`xr2ct_lib.models.i3d.find_i3d`, :func:`xr2ct_lib.models.lpips_net.
find_lpips`); otherwise pass a :class:`FeatureNet` stand-in (e.g. the book's VAE encoder), and the
result is named ``"FD-standin"`` / ``"LPIPS-standin"``, never ``"FVD"`` / ``"LPIPS"``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xr2ct_lib.utils import progress

VolumeLike = np.ndarray | torch.Tensor

PLANES = ("axial", "coronal", "sagittal")
FVD_DISPLAY_SCALE = 1e-3

_NO_I3D = (
    "FVD needs a feature network and no I3D weights were found. Either convert the public "
    "i3d_pretrained_400.pt to safetensors (see xr2ct_lib/models/i3d.py) and put it at "
    "~/.cache/xr2ct/weights/i3d_400.safetensors or set XR2CT_I3D_WEIGHTS, or pass "
    "net=FeatureNet(name, module, description) as a stand-in (reported as 'FD-standin')."
)
_NO_LPIPS = (
    "LPIPS needs a feature network and no LPIPS weights were found. Either convert the "
    "torchvision backbone and lpips heads to safetensors (see xr2ct_lib/models/lpips_net.py) "
    "into ~/.cache/xr2ct/weights or $XR2CT_LPIPS_DIR, or pass net=FeatureNet(name, module, "
    "description) as a stand-in (reported as 'LPIPS-standin')."
)


@dataclass
class FeatureNet:
    """A caller-supplied stand-in feature network (results are labelled ``*-standin``).

    Args:
        name: short name, e.g. ``"VAE-encoder"``.
        module: for :func:`fvd`, maps volumes ``(B, in_channels, D, H, W)`` in [-1, 1] to
            features ``(B, ...)`` (flattened per volume); for :func:`lpips`, maps images
            ``(B, in_channels, h, w)`` in [-1, 1] to a feature map ``(B, C, h', w')``, a vector
            ``(B, C)`` or a list of those.
        description: what the network is and where its weights came from (shown in tables).
        in_channels: grey inputs are repeated to this many channels.
    """

    name: str
    module: Callable[[torch.Tensor], Any]
    description: str
    in_channels: int = 1


@dataclass
class MetricResult:
    """Values of one metric plus the network that produced them.

    ``values`` are per patient (PSNR, SSIM, LPIPS) or set-level (FVD: one value, or one per
    random subset). ``display_scale`` multiplies values in :meth:`fmt` only (FVD: 1e-3, the
    paper's "×10³" column).
    """

    name: str
    values: np.ndarray
    feature_net: str = ""
    display_scale: float = 1.0
    unit: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.atleast_1d(np.asarray(self.values, dtype=np.float64))

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN for a single value."""
        return float(np.std(self.values, ddof=1)) if self.values.size > 1 else math.nan

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit else self.name

    def fmt(self, digits: int | None = None) -> str:
        """``"0.29 ± 0.22"`` (scaled by ``display_scale``); just ``"0.29"`` for one value.

        ``digits=None``: two decimals, or two significant digits for values below 0.1.
        """
        m = self.mean * self.display_scale
        if digits is None:
            a = abs(m)
            digits = (
                2 if a >= 0.1 or a == 0 or not math.isfinite(a) else 1 - math.floor(math.log10(a))
            )
        if self.values.size == 1:
            return f"{m:.{digits}f}"
        return f"{m:.{digits}f} ± {self.std * self.display_scale:.{digits}f}"

    def __str__(self) -> str:
        return f"{self.label}: {self.fmt()} [{self.feature_net}]"


# --------------------------------------------------------------------------------------------
# input handling


def as_volume_batch(x: VolumeLike, what: str = "volume") -> torch.Tensor:
    """``(D,H,W)`` or ``(N,1,D,H,W)`` numpy/torch -> float32 tensor ``(N,1,D,H,W)``."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to(torch.float32).cpu()
    if t.ndim == 3:
        t = t[None, None]
    elif not (t.ndim == 5 and t.shape[1] == 1):
        raise ValueError(f"{what} must be (D, H, W) or (N, 1, D, H, W), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or inf")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1.5 or hi > 1.5:
        raise ValueError(
            f"{what} values span [{lo:.3g}, {hi:.3g}]; metrics expect volumes scaled to [-1, 1] "
            "(the pipeline's CT scaling), not HU"
        )
    return t


def _pair(pred: VolumeLike, target: VolumeLike, clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = as_volume_batch(pred, "pred"), as_volume_batch(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
    if clip:
        p, t = p.clamp(-1, 1), t.clamp(-1, 1)
    return p, t


# --------------------------------------------------------------------------------------------
# PSNR, SSIM


def psnr(
    pred: VolumeLike,
    target: VolumeLike,
    data_range: float = 2.0,
    cap: float | None = None,
    clip: bool = True,
) -> np.ndarray:
    """Per-patient PSNR in dB, ``10 log10(data_range² / MSE)`` over the whole volume.

    Identical volumes give ``inf`` (MSE 0); pass ``cap`` (e.g. 100) to clip such values.
    ``clip`` clamps both volumes to [-1, 1] first (decoded samples can overshoot slightly).
    """
    from monai.metrics import PSNRMetric

    p, t = _pair(pred, target, clip)
    vals = PSNRMetric(max_val=data_range, reduction="none")(p, t)
    out = vals.reshape(-1).double().numpy()
    return np.minimum(out, cap) if cap is not None else out


def ssim(
    pred: VolumeLike,
    target: VolumeLike,
    data_range: float = 2.0,
    win_size: int = 7,
    kernel_type: str = "uniform",
    kernel_sigma: float = 1.5,
    clip: bool = True,
) -> np.ndarray:
    """Per-patient 3D SSIM (MONAI ``SSIMMetric(spatial_dims=3)``), mean over valid windows.

    The default ``win_size=7, kernel_type="uniform"`` is scikit-image's default window
    (population covariances, i.e. ``use_sample_covariance=False``); ``kernel_type="gaussian",
    win_size=11, kernel_sigma=1.5`` is Wang et al.'s Gaussian window. Windows do not cross
    the volume border, so every dimension must be at least ``win_size``.
    """
    from monai.metrics import SSIMMetric

    p, t = _pair(pred, target, clip)
    if min(p.shape[2:]) < win_size:
        raise ValueError(f"SSIM window {win_size} is larger than the volume {tuple(p.shape[2:])}")
    metric = SSIMMetric(
        spatial_dims=3,
        data_range=data_range,
        kernel_type=kernel_type,
        win_size=win_size,
        kernel_sigma=kernel_sigma,
        reduction="none",
    )
    vals = [metric(p[i : i + 1], t[i : i + 1]).reshape(-1) for i in range(p.shape[0])]
    return torch.cat(vals).double().numpy()


# --------------------------------------------------------------------------------------------
# Fréchet distance


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|² + tr(S1 + S2 - 2 (S1 S2)^½)`` via MONAI's ``compute_frechet_distance``
    (``scipy.linalg.sqrtm``). When few samples make the covariances singular and sqrtm's
    imaginary residue trips MONAI's check, the trace term is taken instead from the
    eigenvalues of the symmetric ``S1^½ S2 S1^½`` (same value, numerically stable).
    """
    import scipy.linalg
    from monai.metrics.fid import compute_frechet_distance

    m1, m2 = (torch.as_tensor(np.asarray(m, np.float64)) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(np.atleast_2d(np.asarray(s, np.float64))) for s in (sigma1, sigma2))
    try:
        with warnings.catch_warnings():  # singular covariances are handled below / by caller
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            return float(compute_frechet_distance(m1, s1, m2, s2))
    except ValueError:
        return _frechet_distance_symmetric(m1.numpy(), s1.numpy(), m2.numpy(), s2.numpy())


def _frechet_distance_symmetric(mu1, sigma1, mu2, sigma2) -> float:
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    ev = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = np.sqrt(np.clip(ev, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def frechet_distance_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets ``(N, F)``."""
    f1, f2 = (np.asarray(f, np.float64).reshape(len(f), -1) for f in (f1, f2))
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError(f"need at least 2 feature vectors per set, got {len(f1)} and {len(f2)}")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")
    if min(len(f1), len(f2)) <= f1.shape[1]:
        warnings.warn(
            f"Fréchet distance from {len(f1)} and {len(f2)} samples of {f1.shape[1]}-d features: "
            "the covariances are singular, so the value is noisy and biased upwards; compare "
            "only values computed with the same set sizes",
            stacklevel=2,
        )
    cov = [np.atleast_2d(np.cov(f, rowvar=False)) for f in (f1, f2)]
    return frechet_distance(f1.mean(0), cov[0], f2.mean(0), cov[1])


# --------------------------------------------------------------------------------------------
# feature networks


def _module_device(module: Any) -> torch.device:
    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            return p.device
    return torch.device("cpu")


def _resolve_fvd_net(net: Any) -> tuple[str, Callable, str, Callable]:
    """(result name, module, description, volume->input transform)."""
    from xr2ct_lib.models.i3d import I3DFeatureExtractor, find_i3d, load_i3d

    if net is None:
        path = find_i3d()
        if path is None:
            raise RuntimeError(_NO_I3D)
        net = load_i3d(path)
    if isinstance(net, I3DFeatureExtractor):
        size = net.input_size

        def to_video(v: torch.Tensor) -> torch.Tensor:
            # axial slices are the frames; each frame resized to size x size, grey -> RGB
            v = F.interpolate(v, size=(v.shape[2], size, size), mode="trilinear")
            return v.expand(-1, 3, -1, -1, -1)

        name = "FVD" if net.source else "FD-standin"
        return name, net, net.describe(), to_video
    if isinstance(net, FeatureNet):
        c = net.in_channels
        return "FD-standin", net.module, net.description, lambda v: v.expand(-1, c, -1, -1, -1)
    raise TypeError(f"fvd net must be None, an I3DFeatureExtractor or a FeatureNet, got {net!r}")


@torch.no_grad()
def volume_features(volumes: VolumeLike, net: Any = None, batch_size: int = 4) -> np.ndarray:
    """FVD features ``(N, F)`` of volumes (see :func:`fvd` for ``net``)."""
    _, module, _, transform = _resolve_fvd_net(net)
    return _features(as_volume_batch(volumes, "volumes"), module, transform, batch_size)


def _features(vol: torch.Tensor, module, transform, batch_size: int, desc: str = "") -> np.ndarray:
    device = _module_device(module)
    out = []
    for i in progress(
        range(0, len(vol), batch_size), desc=f"FVD features {desc}".strip(), leave=False
    ):
        f = module(transform(vol[i : i + batch_size].to(device)))
        out.append(torch.as_tensor(f).reshape(f.shape[0], -1).double().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def fvd(
    real: VolumeLike,
    fake: VolumeLike,
    net: Any = None,
    batch_size: int = 4,
    n_subsets: int = 1,
    subset_size: int | None = None,
    seed: int = 0,
) -> MetricResult:
    """Fréchet distance between feature statistics of real and generated volume sets.

    Features: I3D (``net=None`` loads local weights, or pass a loaded
    :class:`~xr2ct_lib.models.i3d.I3DFeatureExtractor`) on the axial slice sequence as video
    frames, grey repeated to RGB, each frame resized to the network's input size (224); or a
    :class:`FeatureNet` stand-in applied to the volumes directly (result ``"FD-standin"``).

    ``values`` hold the raw Fréchet distance. The paper prints "FVD ×10³", i.e. table entry =
    FD / 1000; :meth:`MetricResult.fmt` applies that (``display_scale=1e-3``).
    With ``n_subsets > 1`` the distance is computed on that many random subsets of
    ``subset_size`` volumes from each set (default half), giving a mean ± std; the paper does
    not say how its FVD ± was obtained.
    """
    name, module, desc, transform = _resolve_fvd_net(net)
    r, f = as_volume_batch(real, "real"), as_volume_batch(fake, "fake")
    fr = _features(r, module, transform, batch_size, "(real)")
    ff = _features(f, module, transform, batch_size, "(generated)")
    if n_subsets <= 1:
        values = [frechet_distance_from_features(fr, ff)]
    else:
        rng = np.random.default_rng(seed)
        k = subset_size or max(2, min(len(fr), len(ff)) // 2)
        values = [
            frechet_distance_from_features(
                fr[rng.choice(len(fr), k, replace=False)], ff[rng.choice(len(ff), k, replace=False)]
            )
            for _ in range(n_subsets)
        ]
    return MetricResult(
        name,
        np.array(values),
        desc,
        # the paper's ×10³ applies to I3D FVD; a stand-in's scale is its own, shown as is
        display_scale=FVD_DISPLAY_SCALE if name == "FVD" else 1.0,
        unit="×10³" if name == "FVD" else "",
        extra={"n_real": len(fr), "n_fake": len(ff), "feature_dim": fr.shape[1]},
    )


# --------------------------------------------------------------------------------------------
# LPIPS


def _standin_distance(module: Callable) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """LPIPS without learned heads: unit-normalised squared feature difference, space-averaged."""
    from xr2ct_lib.models.lpips_net import unit_normalize

    def as_list(f: Any) -> list[torch.Tensor]:
        fs = list(f) if isinstance(f, list | tuple) else [f]
        return [t if t.ndim == 4 else t.reshape(t.shape[0], -1, 1, 1) for t in fs]

    def dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0])
        for fx, fy in zip(as_list(module(x)), as_list(module(y)), strict=True):
            d = (unit_normalize(fx) - unit_normalize(fy)) ** 2
            total = total + d.sum(dim=1).mean(dim=(1, 2))
        return total

    return dist


def _resolve_lpips_net(net: Any) -> tuple[str, Callable, str, int, torch.device]:
    from xr2ct_lib.models.lpips_net import LPIPSNet, find_lpips, load_lpips

    if net is None:
        paths = find_lpips()
        if paths is None:
            raise RuntimeError(_NO_LPIPS)
        net = load_lpips(*paths)
    if isinstance(net, LPIPSNet):
        name = "LPIPS" if net.source else "LPIPS-standin"
        return name, net, net.describe(), 3, _module_device(net)
    if isinstance(net, FeatureNet):
        dist = _standin_distance(net.module)
        return "LPIPS-standin", dist, net.description, net.in_channels, _module_device(net.module)
    raise TypeError(f"lpips net must be None, an LPIPSNet or a FeatureNet, got {net!r}")


def _slice_indices(n: int, max_slices: int | None) -> np.ndarray:
    if max_slices is None or n <= max_slices:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_slices).round().astype(int))


def plane_slices(vol: torch.Tensor, plane: str, max_slices: int | None) -> torch.Tensor:
    """Slices ``(S, 1, h, w)`` of one volume ``(1, D, H, W)`` in a plane (evenly subsampled)."""
    axis = {"axial": 1, "coronal": 2, "sagittal": 3}[plane]
    idx = torch.as_tensor(_slice_indices(vol.shape[axis], max_slices))
    return vol.index_select(axis, idx).movedim(axis, 0)


@torch.no_grad()
def lpips(
    pred: VolumeLike,
    target: VolumeLike,
    net: Any = None,
    max_slices_per_plane: int | None = 16,
    planes: Sequence[str] = PLANES,
    resize_to: int | None = None,
    batch_size: int = 32,
    clip: bool = True,
) -> MetricResult:
    """Per-patient LPIPS: 2D distance on slices of the axial, coronal and sagittal planes.

    Each plane contributes up to ``max_slices_per_plane`` evenly spaced slices (None: all);
    the patient's value is the mean over planes of the mean over slices. Slices are repeated
    to the network's channels and optionally resized to ``resize_to`` px (AlexNet needs >= 32).
    ``net=None`` loads local LPIPS weights; a :class:`FeatureNet` stand-in gives
    ``"LPIPS-standin"`` (unit-normalised feature differences, no learned heads).
    """
    name, dist, desc, channels, device = _resolve_lpips_net(net)
    bad = set(planes) - set(PLANES)
    if bad:
        raise ValueError(f"unknown planes {sorted(bad)}; use {PLANES}")
    p, t = _pair(pred, target, clip)
    values = []
    for i in progress(range(len(p)), desc="LPIPS", leave=False):
        plane_means = []
        for plane in planes:
            xs = plane_slices(p[i], plane, max_slices_per_plane)
            ys = plane_slices(t[i], plane, max_slices_per_plane)
            ds = []
            for j in range(0, len(xs), batch_size):
                x, y = (s[j : j + batch_size].to(device) for s in (xs, ys))
                if resize_to is not None:
                    x, y = (
                        F.interpolate(s, size=(resize_to, resize_to), mode="bilinear")
                        for s in (x, y)
                    )
                x, y = x.expand(-1, channels, -1, -1), y.expand(-1, channels, -1, -1)
                ds.append(dist(x, y).double().cpu())
            plane_means.append(float(torch.cat(ds).mean()))
        values.append(float(np.mean(plane_means)))
    return MetricResult(
        name,
        np.array(values),
        desc,
        extra={"planes": tuple(planes), "max_slices_per_plane": max_slices_per_plane},
    )


# --------------------------------------------------------------------------------------------
# table


def quality_table(
    pred: VolumeLike,
    target: VolumeLike,
    fvd_net: Any = None,
    lpips_net: Any = None,
    metrics: Sequence[str] = ("FVD", "PSNR", "SSIM", "LPIPS"),
    label: str = "generated",
    data_range: float = 2.0,
    lpips_kwargs: dict | None = None,
    fvd_kwargs: dict | None = None,
):
    """One-row table of ``"mean ± std"`` for FVD (×10³), PSNR, SSIM, LPIPS (paper Table 2).

    Column names carry the metric's actual name (``"FD-standin (×10³)"``, ``"LPIPS-standin"``
    when stand-ins were used). ``df.attrs["results"]`` holds the :class:`MetricResult` objects
    and ``df.attrs["feature_nets"]`` which network produced each column.
    """
    import pandas as pd

    unknown = set(metrics) - {"FVD", "PSNR", "SSIM", "LPIPS"}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}")
    results: list[MetricResult] = []
    for m in metrics:
        if m == "FVD":
            results.append(fvd(target, pred, fvd_net, **(fvd_kwargs or {})))
        elif m == "PSNR":
            vals = psnr(pred, target, data_range)
            if np.isinf(vals).any():
                warnings.warn("PSNR is inf for identical volumes; the mean is inf", stacklevel=2)
            results.append(MetricResult("PSNR", vals, "none (pixel metric, dB)"))
        elif m == "SSIM":
            results.append(MetricResult("SSIM", ssim(pred, target, data_range), "none (3D)"))
        else:
            results.append(lpips(pred, target, lpips_net, **(lpips_kwargs or {})))
    df = pd.DataFrame({r.label: [r.fmt()] for r in results}, index=pd.Index([label]))
    df.attrs["results"] = {r.label: r for r in results}
    df.attrs["feature_nets"] = {r.label: r.feature_net for r in results}
    return df
