"""Benchmark of the latent diffusion model: train-step time, peak memory, sampling time.

Not a test. Examples::

    python benchmarks/diffusion_bench.py --profile workshop --batch 2            # CPU
    python benchmarks/diffusion_bench.py --profile paper --batch 2 --full-loss   # GPU

Prints, for the profile's latent shape and U-Net: the mean time of a training step (after
one warm-up step) and the peak memory (CUDA allocator on a GPU, process max RSS on CPU),
and the time to sample one volume with DDPM-1000 and with the fast sampler. ``--halves``
chooses the layout of the two half volumes (default: the profile's): ``independent`` (the
paper: a volume is two C-channel samples, a batch of 2) or ``joint`` (one 2C-channel
sample); a training batch holds ``--batch`` samples of that layout. ``--ddpm-steps N``
(< 1000) times N DDPM steps and prints the per-volume time for 1000 steps extrapolated
from them, labelled as such.
Weights are random: timings only. ``--full-loss`` adds the paper's extra terms with
random-weight stand-ins of the right size (AutoencoderKL decoder, LPIPS-AlexNet, MONAI
PatchDiscriminator, MONAI 3D DenseNet latent classifier). ``--csv FILE`` appends the
numbers as one row (chapter 10 shows ``benchmarks/results/diffusion_bench_paper_cpu.csv``,
made with ``--profile paper --halves joint|independent --batch 2 --train-steps 1
--ddpm-steps 1 --fast-steps 1 --csv ...``, one process per layout: the peak memory is the
process's).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import time

import torch

from xr2ct_lib.config import HALVES, get_profile
from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.models.diffusion import DiffusionLoss, noise_scheduler
from xr2ct_lib.models.normalizer import LatentNormalizer
from xr2ct_lib.train.diffusion import LatentPairDataset, train_stage
from xr2ct_lib.train.losses import (
    LossConfig,
    LossTerms,
    make_decode_slices,
    make_discriminator,
    slice_perceptual,
)


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (CUDA allocator peak)"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return f"{rss_kib / 2**20:.2f} GiB (process max RSS, CPU)"


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from xr2ct_lib.train.provenance import machine

    m = machine()
    return f"{m['cpu']} ({m['cpu_cores']} cores visible)"


def write_row(path: str, row: dict) -> None:
    """Append ``row`` to the CSV ``path`` (written whole under a temporary name)."""
    from pathlib import Path

    import pandas as pd

    from xr2ct_lib.files import atomic_write_text

    f = Path(path)
    old = pd.read_csv(f) if f.is_file() else pd.DataFrame()
    atomic_write_text(f, pd.concat([old, pd.DataFrame([row])]).to_csv(index=False))


def full_terms(profile, device) -> LossTerms:
    """The paper's extra terms with random weights of the right size for ``profile``."""
    from diffusers import AutoencoderKL

    from xr2ct_lib.models.classifiers import LatentPEClassifier
    from xr2ct_lib.models.lpips_net import LPIPSNet
    from xr2ct_lib.models.vae import make_standin_vae

    if profile.name == "paper":  # sd-vae-ft-mse's architecture (diffusers defaults + 4 levels)
        n = len(profile.vae_channels)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=profile.vae_channels,
            layers_per_block=2,
            latent_channels=profile.vae_latent_channels,
        )
        decode = vae.decode
        resize_to = None
    else:
        sv = make_standin_vae(profile)
        vae, decode, resize_to = sv, sv.decode_slices, 64  # LPIPS needs ≥ 31 px slices
    vae.to(device).requires_grad_(False)
    return LossTerms(
        LossConfig(),
        decode_slices=make_decode_slices(decode),
        perceptual=slice_perceptual(LPIPSNet("alex").to(device), resize_to=resize_to),
        discriminator=make_discriminator(channels=64),
        classifier=LatentPEClassifier.for_profile(profile),
        halves=profile.halves,
    ).to(device)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="workshop")
    ap.add_argument("--batch", type=int, default=2, help="training batch (per process)")
    ap.add_argument("--halves", choices=HALVES, default=None, help="default: the profile's")
    ap.add_argument("--train-steps", type=int, default=4, help="timed steps (+1 warm-up)")
    ap.add_argument("--ddpm-steps", type=int, default=1000)
    ap.add_argument("--fast-sampler", default="ddim", choices=["ddim", "dpm++"])
    ap.add_argument("--fast-steps", type=int, default=None, help="default: profile's")
    ap.add_argument("--full-loss", action="store_true", help="add perceptual/adv/cls terms")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--csv", default=None, help="append the numbers as one row to this CSV")
    args = ap.parse_args(argv)

    os.environ.setdefault("XR2CT_NO_PROGRESS", "1")
    p = get_profile(args.profile)
    if args.halves:
        p = dataclasses.replace(p, halves=args.halves)
    k = 3 - p.halves_per_sample  # diffusion samples per volume: 1 joint, 2 independent
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if device.type == "cpu" and p.name == "paper":
        print("warning: the paper profile on CPU is very slow", file=sys.stderr)
    torch.manual_seed(0)
    denoiser = LatentDenoiser3D(
        p.diffusion_shape[0], p.unet_channels, cond_dim=p.cxr_embed_dim, conv_kernel=p.unet_kernel
    )
    sched = noise_scheduler(p.diffusion_steps, prediction_type=p.prediction_type)
    model = DiffusionLoss(denoiser, sched).to(device)
    n_params = sum(q.numel() for q in denoiser.parameters())
    print(f"profile={p.name} device={device} halves={p.halves} sample={p.diffusion_shape} "
          f"unet={p.unet_channels}")  # fmt: skip
    print(f"denoiser parameters: {n_params / 1e6:.1f} M, torch {torch.__version__}")

    from accelerate import Accelerator

    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    acc = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if bf16 else "no")
    n = max(4, 2 * args.batch)
    g = torch.Generator().manual_seed(0)
    data = LatentPairDataset(
        torch.rand(n, *p.diffusion_shape, generator=g) * 2 - 1,
        cxr_embeddings=torch.randn(n, p.cxr_embed_dim, generator=g),
        labels=torch.arange(n) % 2,
    )
    terms = full_terms(p, device) if args.full_loss else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        res = train_stage(
            model,
            data,
            "cxr",
            args.train_steps + 1,
            lr=1e-5,
            batch=args.batch,
            ckpt_dir=tmp,
            loss_cfg=terms,
            accelerator=acc,
            ckpt_every=10**9,
            progress=False,
        )
    step_s = res.history["sec"].iloc[1:].mean()
    loss = "L1 + perceptual + adversarial + classification" if args.full_loss else "L1"
    print(f"train step (batch {args.batch}, {loss}, mixed precision {acc.mixed_precision}): ")
    print(f"  {step_s:.3f} s/step (mean of {args.train_steps}); peak memory {peak_memory(device)}")

    # latent-only pipeline: sampling cost without the VAE decode
    pipe = XRay2CTPAPipeline(denoiser, sched, p, LatentNormalizer(-1.0, 1.0))
    cond = torch.randn(1, p.cxr_embed_dim)  # one volume: two half samples, or one joint sample

    def timed(sampler: str, steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pipe(cxr_embeds=cond, num_inference_steps=steps, sampler=sampler,
                 generator=torch.Generator().manual_seed(0), output_type="latent")  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    fast_steps = args.fast_steps or p.sample_steps_fast
    t_fast = timed(args.fast_sampler, fast_steps)
    what = f"one volume ({p.halves} halves, {k} sample{'s' if k > 1 else ''})"
    print(f"sampling {what}, {args.fast_sampler}-{fast_steps}: {t_fast:.2f} s")
    t_ddpm = timed("ddpm", args.ddpm_steps)
    ddpm_1000 = t_ddpm / args.ddpm_steps * model.num_train_timesteps
    if args.csv:
        write_row(args.csv, {
            "profile": p.name, "halves": p.halves, "samples_per_volume": k,
            "sample_shape": "x".join(map(str, p.diffusion_shape)),
            "unet_channels": "-".join(map(str, p.unet_channels)),
            "denoiser_params_M": round(n_params / 1e6, 2), "batch": args.batch, "loss": loss,
            "train_s_per_step": round(step_s, 3), "timed_train_steps": args.train_steps,
            "peak_memory_GiB": peak_gib(device),
            f"{args.fast_sampler}_{fast_steps}_s_per_volume": round(t_fast, 2),
            "ddpm_steps_timed": args.ddpm_steps, "ddpm_1000_s_per_volume": round(ddpm_1000, 1),
            "ddpm_1000_extrapolated": args.ddpm_steps < model.num_train_timesteps,
            "device": str(device), "machine": machine_name(device),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "command": "python benchmarks/diffusion_bench.py " + " ".join(sys.argv[1:]),
        })  # fmt: skip
    if args.ddpm_steps >= model.num_train_timesteps:
        print(f"sampling {what}, ddpm-{args.ddpm_steps}: {t_ddpm:.2f} s")
    else:
        est = t_ddpm / args.ddpm_steps * model.num_train_timesteps
        print(
            f"sampling {what}, ddpm: {t_ddpm:.2f} s for {args.ddpm_steps} steps "
            f"measured; 1000 steps extrapolated: {est:.1f} s"
        )
    print(f"peak memory overall: {peak_memory(device)}")


if __name__ == "__main__":
    main()
