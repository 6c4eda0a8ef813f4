"""The external cohort (chapter 11) really differs from the training cohort's patients."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from xr2ct_lib.config import PROFILES
from xr2ct_lib.data.external import DomainShift, narrower_fov, shifted_ct, simulate_external
from xr2ct_lib.data.phantom import CODE, load_base, simulate_ct_batch, simulate_patient

PROFILE = replace(PROFILES["smoke"], drr_size=48, cxr_size=48)


@pytest.fixture(scope="module")
def base():
    return load_base(4.0)


def test_external_ct_has_no_enhanced_arteries_and_another_scanners_noise(base):
    from scipy.ndimage import gaussian_filter

    p = simulate_patient(11, 1, base, 0, render=False)
    arteries = np.isin(p.findings, [CODE["pulmonary_trunk"], CODE["pulmonary_artery"]])
    arteries &= p.clot_mask == 0
    assert arteries.sum() > 50
    shift = DomainShift()
    ext = shifted_ct(p.plain_hu, shift, np.random.default_rng(0))
    # the cohort's CTPA enhances the arteries; the external CT does not (blood ≈ 40 HU)
    assert np.median(p.ct_hu[arteries]) > 150
    assert np.median(ext[arteries]) < 100
    # its noise: the asked standard deviation, correlated between neighbours (a kernel)
    noise = ext - gaussian_filter(p.plain_hu, shift.kernel_sigma_vox)
    assert abs(noise.std() - shift.noise_sd_hu) < 0.1 * shift.noise_sd_hu
    lag1 = np.corrcoef(noise[:, :, :-1].ravel(), noise[:, :, 1:].ravel())[0, 1]
    assert lag1 > 0.5
    white = np.random.default_rng(1).standard_normal(p.plain_hu.shape)
    assert abs(np.corrcoef(white[:, :, :-1].ravel(), white[:, :, 1:].ravel())[0, 1]) < 0.05


def test_narrower_fov_magnifies_the_centre():
    v = np.zeros((2, 20, 20), np.float32)
    v[:, 8:12, 8:12] = 1.0
    out = narrower_fov(v, 0.5)
    assert out.shape == v.shape and out.sum() > 3 * v.sum()
    np.testing.assert_array_equal(narrower_fov(v, 1.0), v)


def test_simulate_external_leaves_the_default_cohort_unchanged(base, tmp_path):
    before = simulate_ct_batch([5], [1], PROFILE).ct
    ext = simulate_external(2, PROFILE, shift=DomainShift(), seed=0)
    assert ext.ct.shape == (2, *PROFILE.ct_size) and ext.cxr.shape == (2, 3, 48, 48)
    assert ext.ct.min() >= -1 and ext.ct.max() <= 1 and 0 <= ext.cxr.min() <= ext.cxr.max() <= 1
    np.testing.assert_array_equal(simulate_ct_batch([5], [1], PROFILE).ct, before)
    again = simulate_external(2, PROFILE, shift=DomainShift(), seed=0)
    np.testing.assert_array_equal(again.ct, ext.ct)  # deterministic in its seeds
