"""Latent diffusion: schedule, loss terms, sampling, staged resumable training, generation."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusion_tiny import EMB, LATENT, TINY, tiny_model
from torch import nn

from xr2ct_lib.checkpoint import latest, load_checkpoint
from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline
from xr2ct_lib.generation.samplers import sampler_scheduler
from xr2ct_lib.models.bundle import read_denoiser
from xr2ct_lib.models.diffusion import (
    DiffusionLoss,
    noise_scheduler,
    predicted_sample,
    training_target,
)
from xr2ct_lib.train.diffusion import (
    LatentPairDataset,
    batch_indices,
    run_staged_training,
    train_stage,
)
from xr2ct_lib.train.losses import LossConfig, LossTerms, make_decode_slices, slice_perceptual

REPO = Path(__file__).resolve().parent.parent


def tiny_data(n: int = 6, seed: int = 0) -> LatentPairDataset:
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(n, *LATENT, generator=g) * 2 - 1
    return LatentPairDataset(
        lat,
        cxr_embeddings=torch.randn(n, EMB, generator=g),
        drr_embeddings=torch.randn(n, EMB, generator=g),
        labels=torch.arange(n) % 2,
    )


def slice_decoder_2d() -> nn.Module:
    """A tiny stand-in for a VAE decoder: (N, C, h, w) latents → (N, 1, 2h, 2w)."""
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.ConvTranspose2d(4, 4, 2, stride=2), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1)
    )
    return net.requires_grad_(False)


class FeatureDistance(nn.Module):
    """A perceptual-style distance: L2 between features of a fixed random conv net."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.f = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3))

    def forward(self, x, y):
        return F.mse_loss(self.f(x), self.f(y))


def tiny_classifier() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(
        nn.Conv3d(4, 4, 3, padding=1), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 1)
    )


def full_terms(cfg: LossConfig | None = None) -> LossTerms:
    from xr2ct_lib.train.losses import make_discriminator

    torch.manual_seed(8)
    disc = make_discriminator(channels=8, num_layers_d=2)
    return LossTerms(
        cfg or LossConfig(slices_per_volume=2),
        decode_slices=make_decode_slices(slice_decoder_2d()),
        perceptual=FeatureDistance(),
        discriminator=disc,
        classifier=tiny_classifier(),
    )


# ------------------------------------------------------------------------ schedule
def test_cosine_schedule_matches_closed_form():
    """ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2), β ≤ 0.999 (Nichol & Dhariwal)."""
    model = tiny_model()
    T, s = 1000, 0.008

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    betas = np.array([min(1 - f(t + 1) / f(t), 0.999) for t in range(T)])
    abar = np.cumprod(1 - betas)
    got = model.scheduler.alphas_cumprod.double().numpy()
    np.testing.assert_allclose(got, abar, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("pred", ["epsilon", "sample", "v_prediction"])
def test_each_prediction_target_gives_x0_and_the_same_ddim_step(pred):
    torch.manual_seed(0)
    sched, eps_sched = noise_scheduler(prediction_type=pred), noise_scheduler()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, *LATENT, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([20, 400, 900])
    xt = sched.add_noise(x0, noise, t)
    # x_t = √ᾱ·x0 + √(1−ᾱ)·ε with the closed-form ᾱ_t = f(t + 1)/f(0) of the cosine schedule
    f = [math.cos(((k + 1) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for k in t.tolist()]
    abar = torch.tensor(f)
    abar = (abar / math.cos(0.008 / 1.008 * math.pi / 2) ** 2).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(xt, abar.sqrt() * x0 + (1 - abar).sqrt() * noise, atol=2e-4,
                               rtol=1e-3)  # fmt: skip
    target = training_target(sched, x0, noise, t)
    expect = {"epsilon": noise, "sample": x0,
              "v_prediction": abar.sqrt() * noise - (1 - abar).sqrt() * x0}[pred]  # fmt: skip
    torch.testing.assert_close(target, expect, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(predicted_sample(sched, xt, t, target), x0, atol=2e-3, rtol=1e-3)
    # the ideal output of each parametrisation moves x_t to the same x_{t-1}
    step = {}
    for name, sc in (("eps", eps_sched), (pred, sched)):
        ddim = sampler_scheduler(sc, "ddim")
        ddim.set_timesteps(50)
        tt = ddim.timesteps[10]
        x = sc.add_noise(x0, noise, tt.repeat(3))
        step[name] = ddim.step(training_target(sc, x0, noise, tt.repeat(3)), tt, x).prev_sample
    torch.testing.assert_close(step[pred], step["eps"], atol=1e-4, rtol=1e-4)


def test_prediction_type_is_checked_and_the_legacy_denoiser_layout_is_read(tmp_path):
    from xr2ct_lib.checkpoint import prefixed, save_checkpoint

    with pytest.raises(ValueError, match="prediction_type"):
        noise_scheduler(prediction_type="noise")
    model = tiny_model(prediction_type="sample")
    # a bundle's denoiser written before the scheduler had its own folder
    legacy = {"denoiser": model.denoiser.config_dict(),
              "scheduler": {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                            "clip_sample": True, "prediction_type": "sample"},
              "ema_decay": 0.995, "weights": "ema"}  # fmt: skip
    state = prefixed("denoiser", model.denoiser.state_dict())
    save_checkpoint(tmp_path / "old" / "denoiser", state, legacy)
    den, sched = read_denoiser(tmp_path / "old")
    assert sched.config.prediction_type == "sample"
    assert sampler_scheduler(sched, "dpm++").config.prediction_type == "sample"
    for k, v in model.denoiser.state_dict().items():
        torch.testing.assert_close(den.state_dict()[k], v, rtol=0, atol=0)
    assert den.config_dict() == model.denoiser.config_dict()


# ---------------------------------------------------------------------------- losses
def test_every_loss_term_is_finite_and_weighted():
    model = tiny_model(num_classes=2)
    data = tiny_data()
    b = data.batch([0, 1])
    terms = full_terms()
    out = model(b["latent"], b["cxr"], b["label"], terms, torch.Generator().manual_seed(0))
    assert set(out) == {"l1", "perceptual", "adversarial", "classification", "disc", "total"}
    assert all(torch.isfinite(v) for v in out.values())
    w = LossConfig().weights()
    expected = out["l1"] + sum(
        w[k] * out[k] for k in ("perceptual", "adversarial", "classification")
    )
    torch.testing.assert_close(out["total"], expected)
    assert (w["perceptual"], w["adversarial"], w["classification"]) == (0.01, 0.001, 0.08)


@pytest.mark.parametrize("off", ["perceptual", "adversarial", "classification"])
def test_a_zero_weight_removes_the_term(off):
    model = tiny_model()
    b = tiny_data().batch([0, 1])
    cfg = dataclasses.replace(LossConfig(slices_per_volume=2), **{off: 0.0})
    out = model(
        b["latent"], b["cxr"], b["label"], full_terms(cfg), torch.Generator().manual_seed(0)
    )
    assert off not in out
    assert ("disc" in out) == (off != "adversarial")
    vanilla = model(b["latent"], b["cxr"], b["label"], LossTerms(LossConfig.vanilla()))
    assert set(vanilla) == {"l1", "total"}


def test_decode_slices_adapter_denormalises_and_decodes_each_slice():
    dec = slice_decoder_2d()
    norm = {"min": [-1.0, -2.0, -3.0, -4.0], "max": [1.0, 2.0, 3.0, 4.0]}
    z = torch.rand(2, *LATENT) * 2 - 1
    out = make_decode_slices(dec, norm)(z)
    assert out.shape == (2 * LATENT[1], 1, 16, 16)
    scale = torch.tensor([1.0, 2.0, 3.0, 4.0])
    for b in range(2):
        for d in range(LATENT[1]):
            raw = z[b, :, d] * scale[:, None, None]  # (z+1)/2·(max−min)+min for ±a bounds
            torch.testing.assert_close(out[b * LATENT[1] + d], dec(raw[None])[0])
    calls = []
    dist = slice_perceptual(lambda x, y: calls.append(x.shape) or (x - y).abs().mean((1, 2, 3)))
    assert dist(out[:3], out[:3] + 1).item() == pytest.approx(1.0)
    assert calls == [(3, 3, 16, 16)]


def test_slice_perceptual_upsamples_slices_too_small_for_lpips():
    from xr2ct_lib.models.lpips_net import LPIPSNet

    torch.manual_seed(0)
    net = LPIPSNet("alex")
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    y = torch.rand(2, 1, 16, 16) * 2 - 1
    with pytest.raises(ValueError, match="at least 31 px"):
        slice_perceptual(net)(x, y)
    dist = slice_perceptual(net, resize_to=64)
    assert float(dist(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert abs(float(dist(x, y))) > 1e-6  # random heads: the sign is arbitrary
    big = F.interpolate(x, size=(64, 64), mode="bilinear")
    big_y = F.interpolate(y, size=(64, 64), mode="bilinear")
    torch.testing.assert_close(dist(x, y), slice_perceptual(net)(big, big_y))


def test_missing_network_for_a_weighted_term_is_an_error():
    with pytest.raises(ValueError, match="perceptual.*decode_slices"):
        LossTerms(LossConfig(adversarial=0, classification=0))
    with pytest.raises(ValueError, match="classifier"):
        LossTerms(LossConfig(perceptual=0, adversarial=0))


def test_generator_and_discriminator_gradients_are_separate():
    """The generator's adversarial term trains the denoiser only, the disc loss only the disc."""
    model = tiny_model()
    b = tiny_data().batch([0, 1])
    terms = full_terms(LossConfig(l1=False, perceptual=0, classification=0, slices_per_volume=2))
    gen = torch.Generator().manual_seed(3)
    out = model(b["latent"], b["cxr"], None, terms, gen)
    out["total"].backward(retain_graph=True)
    assert all(p.grad is None for p in terms.discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.denoiser.parameters())
    model.zero_grad(set_to_none=True)
    out["disc"].backward()
    assert all(p.grad is None for p in model.denoiser.parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in terms.discriminator.parameters()
    )


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model = tiny_model()
    b = tiny_data().batch([0, 1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(b["latent"], b["cxr"], None, None, torch.Generator().manual_seed(0))
        opt.zero_grad()
        out["total"].backward()
        opt.step()
        losses.append(out["total"].item())
    assert losses[-1] < 0.7 * losses[0], losses


# ----------------------------------------------------------------- training, resume
def test_batch_order_depends_only_on_seed_and_step():
    a = [batch_indices(5, 2, 0, "cxr", s) for s in range(5)]
    flat = sum(a, [])
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    assert batch_indices(5, 2, 0, "cxr", 3) == a[3]
    assert [batch_indices(5, 2, 1, "cxr", s) for s in range(5)] != a  # another seed, another order


def test_dataset_rejects_bad_inputs():
    with pytest.raises(ValueError, match="latents must be"):
        LatentPairDataset(torch.zeros(2, 4, 8, 8))
    emb = torch.randn(3, EMB)
    emb[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"cxr_embeddings has non-finite rows \[1\]"):
        LatentPairDataset(torch.zeros(3, *LATENT), cxr_embeddings=emb)
    with pytest.raises(ValueError, match="needs drr"):
        train_stage(
            tiny_model(), LatentPairDataset(torch.zeros(3, *LATENT)), "drr", 1, progress=False
        )


def _state(model: DiffusionLoss, res):
    return {k: v.clone() for k, v in model.denoiser.state_dict().items()}, res.ema_state


class Killed(RuntimeError):
    pass


def test_checkpoint_round_trip_and_resume_equivalence(tmp_path):
    data = tiny_data()
    kw = {"batch": 2, "seed": 3, "ckpt_every": 3, "progress": False, "lr": 1e-3}
    full = tiny_model(seed=0)
    r_full = train_stage(full, data, "cxr", 6, ckpt_dir=tmp_path / "a", loss_cfg=full_terms(), **kw)
    w_full, ema_full = _state(full, r_full)

    def kill(step, record):
        if step == 4:
            raise Killed

    run1 = tiny_model(seed=0)
    with pytest.raises(Killed):
        train_stage(
            run1, data, "cxr", 6, ckpt_dir=tmp_path / "b", loss_cfg=full_terms(), on_step=kill, **kw
        )
    assert latest(tmp_path / "b").name == "step-00000003"
    tensors, cfg = load_checkpoint(latest(tmp_path / "b"))
    assert cfg["step"] == 3 and cfg["stage"] == "cxr" and len(cfg["history"]) == 3
    assert cfg["num_processes"] == 1
    assert {"python", "numpy", "torch"} <= set(cfg["rng"])
    assert any(k.startswith("optim.") for k in tensors) and any(
        k.startswith("ema.") for k in tensors
    )
    assert any(k.startswith("disc.") for k in tensors) and "disc_optim" in cfg
    assert not (tmp_path / "b" / "final").exists()

    run2 = tiny_model(seed=123)  # other initial weights: everything must come from the checkpoint
    r_res = train_stage(run2, data, "cxr", 6, ckpt_dir=tmp_path / "b", loss_cfg=full_terms(), **kw)
    w_res, ema_res = _state(run2, r_res)
    for k in w_full:
        torch.testing.assert_close(w_res[k], w_full[k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(ema_res[k], ema_full[k], rtol=0, atol=0, msg=k)
    cols = ["step", "lr", "l1", "perceptual", "adversarial", "classification", "disc", "total"]
    h_res, h_full = r_res.history, r_full.history
    np.testing.assert_allclose(h_res[cols].to_numpy(), h_full[cols].to_numpy(), rtol=0, atol=1e-6)
    assert (ema_full["init_conv.weight"] - w_full["init_conv.weight"]).abs().max() > 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "LATEST", "final", "step-00000006"
    ]  # fmt: skip

    # the inference checkpoint holds the EMA weights, with the noise schedule
    final, sched = read_denoiser(tmp_path / "a" / "final")
    assert sched.config.prediction_type == full.scheduler.config.prediction_type
    for k, v in final.state_dict().items():
        torch.testing.assert_close(v, ema_full[k])
    # a finished stage is reloaded, not retrained
    again = tiny_model(seed=9)
    r_again = train_stage(
        again, data, "cxr", 6, ckpt_dir=tmp_path / "a", loss_cfg=full_terms(), **kw
    )
    assert len(r_again.history) == 6
    torch.testing.assert_close(
        again.denoiser.state_dict()["init_conv.weight"], w_full["init_conv.weight"]
    )
    with pytest.raises(ValueError, match="'steps': 6"):
        train_stage(
            tiny_model(), data, "cxr", 8, ckpt_dir=tmp_path / "a", **{**kw, "ckpt_every": 4}
        )


def test_resume_under_another_number_of_processes_is_refused(tmp_path):
    import json

    data = tiny_data()
    kw = {"batch": 2, "seed": 0, "progress": False, "ckpt_dir": tmp_path}
    train_stage(tiny_model(), data, "cxr", 2, ckpt_every=1, **kw)
    ckpt = latest(tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_processes"] = 2  # as if two processes (global batch 4) had written it
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"written by 2 process\(es\) \(global batch 4\); this run "
                       "has 1"):  # fmt: skip
        train_stage(tiny_model(), data, "cxr", 2, **kw)


def test_an_older_checkpoint_layout_is_resumed(tmp_path):
    """Runs started before versioned steps kept one ``last/`` directory: it is resumed."""
    data = tiny_data()
    kw = {"batch": 2, "seed": 0, "progress": False, "lr": 1e-3}
    full = train_stage(tiny_model(), data, "cxr", 4, **kw)

    def stop(step, record):
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        train_stage(tiny_model(), data, "cxr", 4, ckpt_dir=tmp_path, ckpt_every=2, on_step=stop,
                    **kw)  # fmt: skip
    step = latest(tmp_path)
    step.rename(tmp_path / "last")
    (tmp_path / "LATEST").unlink()
    assert latest(tmp_path) == tmp_path / "last"
    res = train_stage(tiny_model(seed=5), data, "cxr", 4, ckpt_dir=tmp_path, ckpt_every=2, **kw)
    for k, v in full.ema_state.items():
        torch.testing.assert_close(res.ema_state[k], v, rtol=0, atol=0)
    assert not (tmp_path / "last").exists() and latest(tmp_path).name == "step-00000004"


def test_staged_training_runs_three_stages(tmp_path):
    model = tiny_model(num_classes=2)
    hist = run_staged_training(
        model, tiny_data(), (2, 2, 3), batch=2, ckpt_dir=tmp_path, progress=False
    ).history
    assert hist["stage"].tolist() == ["uncond"] * 2 + ["drr"] * 2 + ["cxr"] * 3
    assert hist.groupby("stage")["lr"].first().to_dict() == pytest.approx(
        {"uncond": 1e-4, "drr": 1e-4, "cxr": 1e-5}
    )
    assert np.isfinite(hist["total"]).all()
    for stage in ("uncond", "drr", "cxr"):
        assert (tmp_path / stage / "final" / "denoiser" / "model.safetensors").is_file()
    # without DRR embeddings the DRR stage is skipped
    data = tiny_data()
    data.drr = None
    hist = run_staged_training(
        tiny_model(), data, (1, 1, 1), batch=2, ckpt_dir=None, progress=False
    ).history
    assert hist["stage"].tolist() == ["uncond", "cxr"]


def test_first_stages_train_on_the_pretraining_data_and_the_last_on_the_cohort(tmp_path):
    """The collection (DRRs, no X-rays) feeds uncond and drr, the cohort (X-rays, no DRRs)
    feeds cxr: with one dataset for all, the DRR stage would be skipped."""
    collection, cohort = tiny_data(), tiny_data()
    collection.cxr, cohort.drr = None, None
    data = {"uncond": collection, "drr": collection, "cxr": cohort}
    hist = run_staged_training(tiny_model(), data, (1, 2, 1), batch=2, progress=False).history
    assert hist["stage"].tolist() == ["uncond", "drr", "drr", "cxr"]
    with pytest.raises(ValueError, match="needs cxr embeddings"):
        run_staged_training(tiny_model(), {**data, "cxr": collection}, (0, 0, 1), batch=2,
                            progress=False)  # fmt: skip


def test_uncond_stage_ignores_the_condition():
    """In the unconditional stage the loss is the same whatever the embeddings are."""
    data = tiny_data()
    other = LatentPairDataset(
        data.latents, cxr_embeddings=torch.randn_like(data.cxr), labels=data.labels
    )
    h1 = train_stage(tiny_model(), data, "uncond", 2, progress=False, seed=1).history
    h2 = train_stage(tiny_model(), other, "uncond", 2, progress=False, seed=1).history
    np.testing.assert_allclose(h1["total"], h2["total"])
    h3 = train_stage(tiny_model(), other, "cxr", 2, progress=False, seed=1).history
    assert not np.allclose(h1["total"], h3["total"])


DDP_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys, torch
    from accelerate import Accelerator
    sys.path.insert(0, {tests!r})
    from test_diffusion_train import tiny_data, tiny_model
    from xr2ct_lib.train.diffusion import train_stage

    acc = Accelerator(cpu=True)
    model = tiny_model(seed=acc.process_index)  # different init: DDP broadcasts rank 0's
    hist = train_stage(model, tiny_data(8), "cxr", 2, batch=2, accelerator=acc, progress=False,
                       ckpt_dir={ckpt!r}, lr=1e-3).history
    w = torch.cat([p.detach().flatten() for p in model.denoiser.parameters()])
    out = {{"rank": acc.process_index, "world": acc.num_processes, "rows": len(hist),
           "hash": hashlib.sha256(w.numpy().tobytes()).hexdigest()}}
    with open({out!r} + f"/rank{{acc.process_index}}.json", "w") as f:
        json.dump(out, f)
    """
)


def test_two_process_cpu_training_with_accelerate(tmp_path):
    """Two processes over gloo (~15 s). ``--multi_gpu`` picks accelerate's torchrun launcher;
    with no GPU, ``Accelerator(cpu=True)`` then runs MULTI_CPU (``--cpu`` alone starts one
    process, or expects mpirun)."""
    script = tmp_path / "ddp.py"
    script.write_text(
        DDP_SCRIPT.format(tests=str(REPO / "tests"), ckpt=str(tmp_path / "ckpt"), out=str(tmp_path))
    )
    env = {**os.environ, "XR2CT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"),
        *("--num_processes", "2", "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", str(script)),
    ]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["rows"] == r1["rows"] == 2
    assert r0["hash"] == r1["hash"]  # gradients were averaged: the replicas stayed identical
    assert (tmp_path / "ckpt" / "final" / "denoiser" / "model.safetensors").is_file()


# ------------------------------------------------------------------------ generation
@pytest.fixture
def cxr_png(tmp_path) -> Path:
    from PIL import Image

    yy, xx = np.mgrid[0:48, 0:40]
    img = (127 + 100 * np.sin(yy / 6.0) * np.cos(xx / 9.0)).astype(np.uint8)
    path = tmp_path / "cxr.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A bundle of untrained tiny networks (the paper's independent halves), with provenance."""
    from xr2ct_lib.data.phantom import GENERATOR_VERSION
    from xr2ct_lib.models.bundle import write_bundle
    from xr2ct_lib.models.cxr_encoder import StandinCXREncoder
    from xr2ct_lib.models.vae import make_standin_vae

    assert TINY.latent_shape == LATENT
    torch.manual_seed(0)
    vae = make_standin_vae(TINY)
    enc = StandinCXREncoder(EMB, width=4, in_size=TINY.cxr_size)
    model = tiny_model()
    prov = {"cohort": {"generator_version": GENERATOR_VERSION}, "profile": TINY.name}
    return write_bundle(tmp_path / "bundle", model.denoiser, model.scheduler, TINY,
                        {"min": [-3.0] * 4, "max": [3.0] * 4}, vae, enc,
                        provenance=prov)  # fmt: skip


def test_generate_volume_writes_a_nifti(tmp_path, bundle, cxr_png):
    import SimpleITK as sitk

    from xr2ct_lib.generation.volume import generate_volume

    out = generate_volume(cxr_png, bundle, tmp_path / "out" / "gen.nii.gz", steps=3, seed=1,
                          progress=False)  # fmt: skip
    img = sitk.ReadImage(str(out))
    arr = sitk.GetArrayFromImage(img)
    assert arr.shape == (8, 16, 16)
    assert img.GetSpacing() == (2.5, 2.5, 2.5)
    assert np.isfinite(arr).all() and arr.min() >= -100 - 1e-3 and arr.max() <= 900 + 1e-3
    assert arr.std() > 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    out2 = generate_volume(cxr_png, bundle, tmp_path / "gen2.nii.gz", steps=3, seed=1,
                           progress=False)  # fmt: skip
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out2))), arr)
    parts = {"profile.json", "normalizer.json", "denoiser", "scheduler", "vae", "encoder"}
    assert set(os.listdir(bundle)) == parts | {"provenance.json"}


def test_generate_volume_bad_input_fails_clearly(tmp_path, bundle, monkeypatch):
    import json
    import shutil

    from xr2ct_lib.generation.volume import generate_volume
    from xr2ct_lib.models.bundle import StaleBundleError

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not an image")
    sampled = []
    monkeypatch.setattr(XRay2CTPAPipeline, "denoise", lambda *a, **k: sampled.append(1))
    with pytest.raises(ValueError, match="broken.png"):
        generate_volume(bad, bundle, tmp_path / "x.nii.gz", progress=False)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        generate_volume(tmp_path / "missing.png", bundle, tmp_path / "x.nii.gz", progress=False)
    good = tmp_path / "good.png"
    from PIL import Image

    Image.fromarray((np.arange(48 * 40).reshape(48, 40) % 251).astype(np.uint8)).save(good)
    prov = json.loads((bundle / "provenance.json").read_text())
    prov["cohort"]["generator_version"] = "phantom-0.1"
    (bundle / "provenance.json").write_text(json.dumps(prov))
    with pytest.raises(StaleBundleError, match="trained on cohort phantom-0.1"):
        generate_volume(good, bundle, tmp_path / "x.nii.gz", progress=False)
    shutil.rmtree(bundle / "vae")
    with pytest.raises(FileNotFoundError, match="is missing vae"):
        generate_volume(good, bundle, tmp_path / "x.nii.gz", progress=False)
    assert not sampled and not (tmp_path / "x.nii.gz").exists()
