"""A classifier's weights, hence every table built on them, do not depend on the number of
torch threads of the process that trains it (issue 20, item 7)."""

import numpy as np
import torch

from xr2ct_lib.config import PROFILES
from xr2ct_lib.train.classifier import fit_latent_classifier, score_latents


def _fit_and_score(threads: int) -> tuple[dict, np.ndarray]:
    p = PROFILES["workshop"]
    rng = np.random.default_rng(0)
    z = rng.normal(size=(12, 2, *p.latent_shape)).astype(np.float32)
    y = np.array([1, 0] * 6)
    z[y == 1, :, :, :4] += 0.5  # something to learn
    split = {"train": np.arange(8), "val": np.arange(8, 12)}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = fit_latent_classifier(p, z, y, split, epochs=2, seed=0, desc="t")
        return model.state_dict(), score_latents(model, z)
    finally:
        torch.set_num_threads(before)


def test_latent_classifier_same_weights_and_scores_on_1_and_2_threads():
    (w1, s1), (w2, s2) = _fit_and_score(1), _fit_and_score(2)
    assert torch.get_num_threads() >= 1
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    np.testing.assert_array_equal(s1, s2)
