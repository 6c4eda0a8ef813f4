"""Fréchet distances: between two Gaussians, two feature sets, and two sets of volumes (FVD).

FVD compares the I3D feature statistics of real and generated volume *sets* (the axial slice
sequence is the video). The real I3D (Kinetics-400) is looked up locally
(:func:`xr2ct_lib.models.i3d.find_i3d`); otherwise pass a
:class:`~xr2ct_lib.eval.standins.FeatureNet` stand-in and the result is named ``"FD-standin"``,
never ``"FVD"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xr2ct_lib.eval.metric_result import MetricResult
from xr2ct_lib.eval.standins import FeatureNet
from xr2ct_lib.eval.volume_input import VolumeLike, as_volume_batch
from xr2ct_lib.utils import module_device, progress

FVD_DISPLAY_SCALE = 1e-3

_NO_I3D = (
    "FVD needs a feature network and no I3D weights were found. Either convert the public "
    "i3d_pretrained_400.pt to safetensors (see xr2ct_lib/models/i3d.py) and put it at "
    "~/.cache/xr2ct/weights/i3d_400.safetensors or set XR2CT_I3D_WEIGHTS, or pass "
    "net=FeatureNet(name, module, description) as a stand-in (reported as 'FD-standin')."
)


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


def resolve_fvd_net(net: Any) -> tuple[str, Callable, str, Callable]:
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
    _, module, _, transform = resolve_fvd_net(net)
    return _features(as_volume_batch(volumes, "volumes"), module, transform, batch_size)


def _features(vol: torch.Tensor, module, transform, batch_size: int, desc: str = "") -> np.ndarray:
    device = module_device(module)
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
    name, module, desc, transform = resolve_fvd_net(net)
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
