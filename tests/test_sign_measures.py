"""The sign probes measure the simulated anatomy: cross-fitted on smoke-size CTs, their
estimates follow the measured RV/LV ratio and effusion volume, and not shuffled values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from xr2ct_lib.config import PROFILES
from xr2ct_lib.data.phantom import simulate_ct_batch
from xr2ct_lib.eval import sign_measures as sm


@pytest.fixture(scope="module")
def batch():
    y = np.tile([0, 1], 18)
    return y, simulate_ct_batch(list(range(3000, 3036)), y, PROFILES["smoke"])


def test_volume_features_are_block_means():
    v = np.arange(2 * 8 * 8 * 8, dtype=np.float32).reshape(2, 8, 8, 8)
    f = sm.volume_features(v, pool=4)
    assert f.shape == (2, 8)
    assert f[1, 7] == pytest.approx(v[1, 4:, 4:, 4:].mean())
    with pytest.raises(ValueError, match="smaller"):
        sm.volume_features(v[:, :2], pool=4)


@pytest.mark.parametrize("sign", ["rv_lv_ratio", "effusion_ml"])
def test_cross_fitted_probe_follows_the_measured_sign(batch, sign):
    y, b = batch
    truth = b.records[sign].to_numpy(float)
    folds = np.arange(len(y)) % 6
    est, _ = sm.cross_fitted(b.ct, truth, folds)
    rho = spearmanr(est, truth).statistic
    shuffled = np.random.default_rng(0).permutation(truth)
    est_s, _ = sm.cross_fitted(b.ct, shuffled, folds)
    rho_s = spearmanr(est_s, shuffled).statistic
    assert rho > 0.3, rho
    assert rho - rho_s > 0.3, (rho, rho_s)


def test_sign_transfer_table_reads_real_and_generated(batch):
    y, b = batch
    ids = [f"P{i:02d}" for i in range(len(y))]
    records = b.records.reset_index(drop=True).set_index(pd.Index(ids))
    folds = np.arange(len(y)) % 6
    # "generated" = the real volume for folds 0-1: it must carry the sign exactly as the real
    gen = {i: b.ct[j] for j, i in enumerate(ids) if folds[j] < 2}
    tab = sm.sign_transfer(b.ct, records, y, folds, gen, ids)
    assert list(tab.sign) == list(sm.SIGNS.values())
    assert (tab.patients == 12).all()
    np.testing.assert_allclose(tab["generated: ρ with truth"], tab["real: ρ with truth"])
    assert "held-out patients" in sm.reading(tab)
    with pytest.raises(ValueError, match="chapter 5"):
        sm.sign_transfer(b.ct, records, y, folds, {}, ids)


def test_the_probe_reads_the_signs_from_vae_latents(batch):
    """Cross-fitted on the smoke VAE's latents of smoke-size CTs, the probe follows the RV/LV
    ratio and the effusion volume; an array that is neither latents nor volumes is refused."""
    from xr2ct_lib.config import WEIGHTS_DIR
    from xr2ct_lib.models.vae import load_vae

    y, b = batch
    vae = load_vae(WEIGHTS_DIR / "smoke" / "vae")
    z = np.stack([vae.encode_halves(v).float().numpy() for v in b.ct])
    assert sm.sign_features(z).shape == (len(y), z[0].size)
    folds = np.arange(len(y)) % 6
    truth = b.records[["rv_lv_ratio", "effusion_ml"]].to_numpy(float)
    est, _ = sm.cross_fitted(z, truth, folds)
    rho = [spearmanr(est[:, j], truth[:, j]).statistic for j in range(2)]
    assert min(rho) > 0.3, rho
    with pytest.raises(ValueError, match="latents"):
        sm.sign_features(z[:, 0])
