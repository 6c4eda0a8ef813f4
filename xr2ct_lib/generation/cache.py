"""The book's generated volumes: generated once per patient and cached in the run folder.

:func:`generate_patients` writes ``<run_dir>/<out_dir>/<pid>.safetensors`` (the volume, its
latents and what it depends on, :func:`generation_key`) and reuses a volume whose key has
not changed; each patient's noise seed is :func:`patient_seed`, the seed ``xr2ct generate``
gives the same cohort position, so the CLI reproduces a book volume bit for bit.
:func:`xr2ct_lib.eval.generated.load_generated` reads the cache back.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.files import atomic_write
from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline, noise_seed
from xr2ct_lib.generation.samplers import sampling
from xr2ct_lib.utils import progress, recipe_key


def patient_seed(cfg: RunConfig, index: int) -> int:
    """The noise seed of the patient at cohort position ``index`` (recorded with its volume)."""
    return noise_seed(cfg.seed, index)


def generation_key(pipe: XRay2CTPAPipeline, sampler: str, steps: int, guidance: float,
                   seed: int) -> str:  # fmt: skip
    """What a generated volume depends on: the bundle's weights, sampler, steps, guidance, seed."""
    return recipe_key(bundle=pipe.key, sampler=sampler, steps=steps, guidance=guidance,
                         seed=seed)  # fmt: skip


def stored_metadata(path: Path) -> dict:
    """A cached volume's safetensors metadata (empty when it cannot be read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception:
        return {}


@torch.no_grad()
def generate_patients(
    cfg: RunConfig,
    pipe: XRay2CTPAPipeline,
    ids: list[str],
    sampler: str | None = None,
    steps: int | None = None,
    guidance_scale: float = 1.0,
    out_dir: str = "generated",
    reuse: bool = True,
) -> pd.DataFrame:
    """Generate each patient's volume from its X-ray with ``pipe``, one patient per call: the
    book's way to generate a cohort's volumes (chapters 4, 5, 6 and the sampler benchmark).

    One call per patient, seeded with :func:`patient_seed`, exactly as ``xr2ct generate
    --seed`` does: the same bundle, X-ray and seed give the same volume bit for bit. Writes
    ``<run_dir>/<out_dir>/<pid>.safetensors`` with ``ct`` (D, H, W) in [−1, 1] and ``z`` (2,
    C, d, h, w) raw VAE latents; its metadata holds the seed, sampler, steps, guidance and the
    bundle's key; :func:`xr2ct_lib.eval.generated.load_generated` reads them back. With
    ``reuse``, a volume already there with the same key is kept. Returns one row per patient:
    seed, sampler, steps, seconds (when reused, the seconds it took when it was made, from its
    metadata; NaN if not recorded), reused.
    """
    train_timesteps = int(pipe.scheduler.config.num_train_timesteps)
    sampler, steps = sampling(cfg.profile, train_timesteps, sampler, steps)
    cohort = PreparedCohort(cfg.run_dir)
    rows = []
    for pid in progress(ids, desc=f"generate ({sampler}, {steps} steps)", unit="volume"):
        seed = patient_seed(cfg, cohort.ids.index(pid))
        key = generation_key(pipe, sampler, steps, guidance_scale, seed)
        path = cfg.run_dir / out_dir / f"{pid}.safetensors"
        row = {"patient_id": pid, "seed": seed, "sampler": sampler, "steps": steps}
        stored = stored_metadata(path) if reuse and path.is_file() else {}
        if stored.get("key") == key:
            rows.append({**row, "seconds": float(stored.get("seconds", "nan")), "reused": True})
            continue
        cxr = torch.from_numpy(cohort.load(pid)["cxr"][None])
        out = pipe(cxr, num_inference_steps=steps, guidance_scale=guidance_scale,
                   generator=torch.Generator().manual_seed(seed), sampler=sampler)  # fmt: skip
        rows.append({**row, "seconds": out.seconds, "reused": False})
        meta = {"key": key, "seed": str(seed), "sampler": sampler, "steps": str(steps),
                "guidance_scale": str(guidance_scale), "networks": pipe.key,
                "weights": cfg.weights, "seconds": repr(float(out.seconds))}  # fmt: skip
        tensors = {"ct": torch.from_numpy(out.volumes[0]), "z": out.latents[0].contiguous()}
        atomic_write(path, lambda tmp, t=tensors, m=meta: save_file(t, tmp, metadata=m))
    return pd.DataFrame(rows)
