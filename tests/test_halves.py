"""The two layouts of the half volumes: joint (2C channels) and independent (C channels)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from xr2ct_lib.config import PROFILES
from xr2ct_lib.models import halves as H
from xr2ct_lib.train.losses import LossConfig, LossTerms

C, D, h, w = 4, 3, 2, 2


def stored(n: int = 3) -> torch.Tensor:
    """(N, 2, C, d, h, w) with every entry naming its patient, half and channel."""
    z = torch.zeros(n, 2, C, D, h, w)
    for i in range(n):
        for half in range(2):
            for c in range(C):
                z[i, half, c] = 100 * i + 10 * half + c
    return z


def test_joint_layout_puts_both_halves_of_a_patient_in_one_sample():
    z = stored()
    x = H.to_diffusion(z, "joint")
    assert x.shape == (3, 2 * C, D, h, w)
    # sample i: channels 0..C-1 are half 0, C..2C-1 half 1 of patient i
    assert x[1, :, 0, 0, 0].tolist() == [100, 101, 102, 103, 110, 111, 112, 113]
    torch.testing.assert_close(H.from_diffusion(x, "joint", C), z)


def test_independent_layout_makes_each_half_a_sample():
    z = stored()
    x = H.to_diffusion(z, "independent")
    assert x.shape == (6, C, D, h, w)
    assert [x[k, 0, 0, 0, 0].item() for k in range(6)] == [0, 10, 100, 110, 200, 210]
    torch.testing.assert_close(H.from_diffusion(x, "independent", C), z)


@pytest.mark.parametrize("halves", ["joint", "independent"])
def test_per_half_and_labels_follow_the_layout(halves):
    z = stored()
    x = H.to_diffusion(z, halves)
    rows = H.per_half(x, halves)
    torch.testing.assert_close(rows, z.reshape(6, C, D, h, w))  # patient-major, half-minor
    labels = H.repeat_per_sample(torch.tensor([0, 1, 0]), halves)
    assert len(labels) == len(x)
    assert H.labels_per_half(labels, halves).tolist() == [0, 0, 1, 1, 0, 0]
    cond = H.repeat_per_sample(np.arange(3)[:, None], halves)
    assert cond.shape == (len(x), 1)


def test_layout_errors_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(N, 2, C, d, h, w\)"):
        H.to_diffusion(torch.zeros(3, C, D, h, w), "joint")
    with pytest.raises(ValueError, match="joint diffusion samples must be"):
        H.from_diffusion(torch.zeros(2, C, D, h, w), "joint", C)
    with pytest.raises(ValueError, match="in pairs"):
        H.from_diffusion(torch.zeros(3, C, D, h, w), "independent", C)
    with pytest.raises(ValueError, match="halves must be one of"):
        H.to_diffusion(stored(), "interleaved")
    with pytest.raises(ValueError, match="halves must be one of"):
        dataclasses.replace(PROFILES["smoke"], halves="both")


def test_profiles_choose_joint_in_book_and_independent_for_the_paper():
    assert PROFILES["smoke"].halves == PROFILES["workshop"].halves == "joint"
    assert PROFILES["paper"].halves == "independent"
    ws = PROFILES["workshop"]
    c = ws.latent_shape[0]
    assert ws.diffusion_shape == (2 * c, *ws.latent_shape[1:])
    assert PROFILES["paper"].diffusion_shape == PROFILES["paper"].latent_shape
    short, long = ws.schedule("short"), ws.schedule("long")
    assert short.diffusion == ws.train_steps and sum(long.diffusion) > sum(short.diffusion)
    with pytest.raises(ValueError, match="unknown schedule"):
        ws.schedule("medium")


class HalfClassifier(nn.Module):
    """Logit = mean of channel 0 of a half latent (C channels exactly)."""

    def forward(self, z):
        assert z.shape[1] == C, z.shape
        return z[:, 0].mean(dim=(1, 2, 3))[:, None]


def test_classification_term_reads_each_half_of_a_joint_sample():
    """The joint term equals the term computed on the two halves as separate samples."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 2, C, D, h, w, generator=g)
    labels = torch.tensor([1, 0, 1])
    cfg = LossConfig(perceptual=0.0, adversarial=0.0, classification=1.0)
    joint = LossTerms(cfg, classifier=HalfClassifier(), halves="joint")
    indep = LossTerms(cfg, classifier=HalfClassifier(), halves="independent")
    xj = H.to_diffusion(z, "joint")
    xi = H.to_diffusion(z, "independent")
    lj = joint.generator_terms(xj, xj, labels)["classification"]
    li = indep.generator_terms(xi, xi, H.repeat_per_sample(labels, "independent"))
    torch.testing.assert_close(lj, li["classification"])
    logits = z[:, :, 0].mean(dim=(2, 3, 4)).reshape(-1)
    expect = nn.functional.binary_cross_entropy_with_logits(
        logits, labels.repeat_interleave(2).float()
    )
    torch.testing.assert_close(lj, expect)
