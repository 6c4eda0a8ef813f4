"""The paper's DDPM sampler against the fast ones (DDIM, DPM-Solver++): quality and time."""

from __future__ import annotations

import numpy as np
import pandas as pd
from safetensors.numpy import load_file

from xr2ct_lib.config import RunConfig
from xr2ct_lib.eval.pixel_metrics import psnr, ssim
from xr2ct_lib.generation.cache import generate_patients


def sampler_settings(cfg: RunConfig) -> list[tuple[str, int]]:
    """(sampler, steps): DDIM with the profile's fast steps, DPM-Solver++ with half as many,
    DDPM with the profile's ``ddpm_steps`` (the paper: all 1000)."""
    fast = cfg.profile.sample_steps_fast
    return [("ddim", fast), ("dpm++", max(fast // 2, 2)), ("ddpm", cfg.profile.ddpm_steps)]


def sampler_dir(sampler: str, steps: int) -> str:
    """The run folder a (sampler, steps) setting's volumes go to, e.g. ``generated_dpmpp_2``."""
    return f"generated_{sampler.replace('+', 'p')}_{steps}"


def compare_samplers(cfg: RunConfig, model, patient_id: str, real_ct: np.ndarray) -> pd.DataFrame:
    """Generate one patient with each sampler; seconds per volume, PSNR and SSIM vs ``real_ct``.

    Each volume is written to ``generated_<sampler>_<steps>/`` (chapter 5's ``generated/`` is
    left alone).
    """
    rows = []
    for sampler, steps in sampler_settings(cfg):
        out = sampler_dir(sampler, steps)
        t = generate_patients(cfg, model, [patient_id], sampler=sampler, steps=steps, out_dir=out)
        vol = load_file(str(cfg.run_dir / out / f"{patient_id}.safetensors"))["ct"][None, None]
        ref = np.asarray(real_ct)[None, None]
        rows.append({"sampler": f"{sampler.upper()}-{steps}", "s / volume": t.seconds.mean(),
                     "PSNR": psnr(vol, ref).mean(), "SSIM": ssim(vol, ref).mean()})  # fmt: skip
    return pd.DataFrame(rows).set_index("sampler")


def ddpm_seconds(samplers: pd.DataFrame, steps: int = 1000) -> float:
    """Seconds per volume of DDPM with ``steps`` steps, extrapolated linearly from the DDPM
    row of :func:`compare_samplers` (one denoiser call per step; NaN without a DDPM row)."""
    rows = [s for s in samplers.index if str(s).startswith("DDPM-")]
    if not rows:
        return float("nan")
    measured = int(str(rows[-1]).split("-", 1)[1])
    return float(samplers.loc[rows[-1], "s / volume"]) * steps / measured
