"""3D Grad-CAM of the latent classifier and its localisation score against chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xr2ct_lib.eval import gradcam as gc
from xr2ct_lib.models.classifiers import LatentPEClassifier
from xr2ct_lib.train.classifier import train_classifier

SHAPE = (4, 8, 8, 8)


def _latents(n, seed):
    """Noise latents; positives get a bright blob at a random place in channel 1."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    z = rng.normal(0, 0.5, (n, *SHAPE)).astype(np.float32)
    for i in np.flatnonzero(y):
        d, h, w = rng.integers(1, 6, 3)
        z[i, 1, d : d + 3, h : h + 3, w : w + 3] += 2.0
    return torch.from_numpy(z), y


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = LatentPEClassifier(4, init_features=8, growth_rate=4, block_config=(2, 2))
    x, y = _latents(96, 0)
    xv, yv = _latents(30, 1)
    return train_classifier(m, x, y, xv, yv, epochs=12, lr=3e-3)[0]


def test_gradcam_shape_not_constant_and_peaks_near_the_blob(model):
    torch.manual_seed(1)
    z = torch.randn(1, *SHAPE) * 0.5
    far, near = z.clone(), z.clone()
    far[0, 1, 5:8, 5:8, 5:8] += 3.0  # a blob in the far corner octant
    near[0, 1, 0:3, 0:3, 0:3] += 3.0  # ... or in the near one
    cam = gc.gradcam_latent(model, far)[0].detach().numpy()
    cam_near = gc.gradcam_latent(model, near)[0].detach().numpy()
    assert cam.shape == SHAPE[1:] and cam.std() > 0
    # the map is coarse (inner dense block = 1/4 of the latent): compare octants
    assert cam[4:, 4:, 4:].mean() > 1.2 * cam[:4, :4, :4].mean()
    assert cam_near[:4, :4, :4].mean() > 1.2 * cam_near[4:, 4:, 4:].mean()


def test_gradcam_volume_reinterleaves_the_two_halves(model):
    torch.manual_seed(1)
    z = torch.randn(1, *SHAPE) * 0.5
    far, near = z.clone(), z.clone()
    far[0, 1, 5:8, 5:8, 5:8] += 3.0
    near[0, 1, 0:3, 0:3, 0:3] += 3.0
    # half 0 = even slices (blob far), half 1 = odd slices (blob near)
    vol = gc.gradcam_volume(model, np.stack([far[0].numpy(), near[0].numpy()]), (16, 32, 32))
    assert vol.shape == (16, 32, 32) and vol.max() == pytest.approx(1.0) and vol.min() >= 0
    even, odd = vol[0::2], vol[1::2]
    assert even[4:, 16:, 16:].mean() > even[:4, :16, :16].mean()
    assert odd[:4, :16, :16].mean() > odd[4:, 16:, 16:].mean()


def test_localisation_score_and_random_baseline():
    mask = np.zeros((16, 16, 16), np.uint8)
    mask[6:9, 6:9, 6:9] = 1
    cam = np.zeros(mask.shape)
    cam[7, 7, 7] = 1.0
    s = gc.localisation_score(cam, mask, dilate=0)
    assert s["hit"] == 1 and s["mass_on_clot"] == 1 and s["chance"] == pytest.approx(27 / 16**3)
    off = np.zeros(mask.shape)
    off[0, 0, 0] = 1.0
    assert gc.localisation_score(off, mask, dilate=0)["hit"] == 0
    b = gc.random_baseline(mask, n=200, dilate=0)
    assert b["mass_on_clot"] == pytest.approx(27 / 16**3, abs=0.01)
    with pytest.raises(ValueError, match="empty"):
        gc.localisation_score(cam, np.zeros_like(mask))


def _patients(n, seed):
    """Clot masks of ``n`` patients, one blob each at a random place."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 16, 16, 16), np.uint8)
    for m in masks:
        d, h, w = rng.integers(2, 11, 3)
        m[d : d + 3, h : h + 3, w : w + 3] = 1
    return masks


def _scores(maps, masks, seed=0):
    rows = []
    for i, (cam, mask) in enumerate(zip(maps, masks, strict=True)):
        s = gc.localisation_score(cam, mask)
        b = gc.random_baseline(mask, n=20, seed=seed + i)
        rows.append({"patient": i, "source": "x", **s, "random-map hit": b["hit"],
                     "random-map mass": b["mass_on_clot"]})  # fmt: skip
    return __import__("pandas").DataFrame(rows)


def test_significance_rejects_for_clot_maps_and_not_for_random_maps():
    masks = _patients(14, 0)
    clot_maps = masks.astype(float)
    summary = gc.localisation_summary(_scores(clot_maps, masks))
    assert summary.loc["x", "p hit > random"] < 0.01
    assert summary.loc["x", "p mass > random"] < 0.01
    rng = np.random.default_rng(5)
    from scipy import ndimage

    random_maps = np.stack([np.clip(ndimage.gaussian_filter(rng.random(m.shape), 3) - 0.5, 0, None)
                            for m in masks])  # fmt: skip
    summary = gc.localisation_summary(_scores(random_maps, masks, seed=100))
    assert summary.loc["x", "p mass > random"] > 0.05
    assert summary.loc["x", "p hit > random"] > 0.05
    assert gc.above_random([0.1, 0.2], [0.1, 0.2]) == 1.0
