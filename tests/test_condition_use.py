"""Whether a denoiser reads its condition (:mod:`xr2ct_lib.eval.condition_use`): zero for one
that cannot see it, clearly positive for one trained where the condition decides the latent."""

from __future__ import annotations

import numpy as np
import torch

from xr2ct_lib.eval.condition_use import condition_use
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.models.diffusion import DiffusionLoss, noise_scheduler

SHAPE = (2, 4, 8, 8)


def planted(n: int, seed: int):
    """Latents whose sign in one block is given by the condition's first feature."""
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(n, 16, generator=g)
    z = 0.1 * torch.randn(n, *SHAPE, generator=g)
    z[:, :, :, :4, :4] += 0.8 * torch.sign(cond[:, :1, None, None, None])
    return z, cond


def tiny(**kw) -> LatentDenoiser3D:
    torch.manual_seed(0)
    return LatentDenoiser3D(in_channels=2, channels=(8, 16), cond_dim=16, attention_head_dim=8,
                            **kw)  # fmt: skip


def test_a_denoiser_blind_to_its_condition_gains_nothing():
    den = tiny()
    with torch.no_grad():  # the blocks' scale and shift no longer see the condition's columns
        for m in den.modules():
            if (
                isinstance(m, torch.nn.Linear)
                and m.in_features == den.time_mlp[-1].out_features + 16
            ):
                m.weight[:, -16:] = 0
    z, cond = planted(12, 0)
    table = condition_use(den, noise_scheduler(1000, prediction_type="sample"), z, cond)
    assert list(table["timestep"]) == [200, 500, 800, 950]
    np.testing.assert_allclose(table["own"], table["another"], rtol=1e-6)
    np.testing.assert_allclose(table[["gain", "gain_lo", "gain_hi"]], 0, atol=1e-6)


def test_a_denoiser_trained_on_its_condition_reads_it():
    sched = noise_scheduler(1000, prediction_type="sample")
    den = tiny(cond_embed_type="projection", cond_drop_prob=0.1)
    z, cond = planted(64, 1)
    den.set_condition_statistics(cond)
    loss = DiffusionLoss(den, sched)
    opt = torch.optim.Adam(den.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    den.train()
    for _ in range(150):
        idx = torch.randint(0, 64, (8,), generator=g)
        out = loss(z[idx], cond[idx], generator=g)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
    z_new, cond_new = planted(24, 2)  # held-out patients
    table = condition_use(den, sched, z_new, cond_new, timesteps=(950,))
    row = table.iloc[0]
    assert row["gain"] > 0.2 and row["gain_lo"] > 0, row.to_dict()
    assert row["own"] < row["none"]
