"""Classifiers learn a planted signal (and not shuffled labels); checkpoints; RadImageNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from xr2ct_lib.config import PROFILES
from xr2ct_lib.models.classifiers import (
    LatentPEClassifier,
    SliceEncoder,
    SliceLSTMClassifier,
    load_classifier,
    load_radimagenet_resnet50,
    save_classifier,
)
from xr2ct_lib.train.classifier import predict, slice_labels, subsample_slices, train_classifier
from xr2ct_lib.train.fit import flip_lr

SHAPE = (4, 8, 8, 8)  # the smoke profile's latent half is (4, 16, 8, 8); smaller for speed


def _latents(n, seed, planted=True):
    """Noise latents; positives get a bright blob at a random place in channel 1."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    z = rng.normal(0, 0.5, (n, *SHAPE)).astype(np.float32)
    for i in np.flatnonzero(y if planted else np.zeros(n)):
        d, h, w = rng.integers(1, 6, 3)
        z[i, 1, d : d + 3, h : h + 3, w : w + 3] += 2.0
    return torch.from_numpy(z), y


def _model():
    torch.manual_seed(0)
    return LatentPEClassifier(4, init_features=8, growth_rate=4, block_config=(2, 2))


def test_latent_classifier_learns_planted_blob_not_shuffled_labels():
    x, y = _latents(96, 0)
    xv, yv = _latents(30, 1)
    xt, yt = _latents(60, 2)
    model, hist = train_classifier(_model(), x, y, xv, yv, epochs=12, lr=3e-3, augment=flip_lr)
    assert roc_auc_score(yt, predict(model, xt)) > 0.85
    shuffled = np.random.default_rng(0).permutation(y)
    null, _ = train_classifier(_model(), x, shuffled, xv, yv, epochs=6, lr=3e-3)
    assert abs(roc_auc_score(yt, predict(null, xt)) - 0.5) < 0.2


def test_profile_classifiers_fit_their_latents_and_checkpoints_round_trip(tmp_path):
    for name in ("smoke", "workshop"):
        m = LatentPEClassifier.for_profile(PROFILES[name]).eval()
        z = torch.randn(2, *PROFILES[name].latent_shape)
        assert m(z).shape == (2, 1)
    save_classifier(m, tmp_path / "latent")
    torch.testing.assert_close(load_classifier(tmp_path / "latent")(z), m(z))
    lstm = SliceLSTMClassifier(64).eval()
    feats = torch.randn(3, 16, 64)
    save_classifier(lstm, tmp_path / "lstm")
    torch.testing.assert_close(load_classifier(tmp_path / "lstm")(feats), lstm(feats))
    assert SliceEncoder()(torch.randn(5, 1, 32, 32)).shape == (5, 64)


def test_slice_labels_and_subsampling():
    clot = np.zeros((2, 6, 4, 4), np.uint8)
    clot[0, 2, 1, 1] = 1
    clot[1, 5] = 1
    np.testing.assert_array_equal(slice_labels(clot), [[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]])
    assert list(subsample_slices(64, 16)) == list(np.linspace(0, 63, 16).round().astype(int))
    assert len(subsample_slices(64, None)) == 64


def test_radimagenet_loader_reads_safetensors_and_replaces_the_head(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None, num_classes=165)
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "r.safetensors")
    )
    model = load_radimagenet_resnet50(tmp_path / "r.safetensors")
    torch.testing.assert_close(model.conv1.weight, ref.conv1.weight)
    assert model.fc.out_features == 1
    with pytest.raises(FileNotFoundError, match="RadImageNet"):
        load_radimagenet_resnet50(tmp_path / "absent.safetensors")
