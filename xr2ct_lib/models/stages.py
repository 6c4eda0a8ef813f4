"""Stage checkpoints in a bundle: the EMA denoiser at the end of a training stage.

Chapter 10 branches every ablation variant from one shared checkpoint, the end of the
unconditional stage (and, optionally, the DRR stage) of the shipped bundle. A bundle keeps
them beside its final denoiser::

    bundle/stages/uncond/   config.json + model.safetensors (float16), as ``denoiser/``
    bundle/stages/drr/      (optional)

``provenance.json`` lists them under ``"stages"`` (steps, dtype, sha256 of the weights,
where they came from); :func:`read_stage` refuses a stage whose weights no longer match.
The stages are not part of the bundle's fingerprint: adding them to a bundle changes no
generated volume, so no cache keyed on the bundle is invalidated.

:func:`add_stages` copies them into an existing bundle from its training work dir
(``runs/weights-<profile>-long/models/diffusion/<recipe>/<stage>/final``), so a bundle that
was trained without them need not be retrained (``xr2ct add-stages``). Two layouts of a
stage's ``final`` folder are read: ``final/denoiser/`` (+ ``final/scheduler/``) and the older
single folder ``final/`` whose config holds ``denoiser`` and ``scheduler``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from xr2ct_lib.checkpoint import load_checkpoint, save_checkpoint, unprefixed
from xr2ct_lib.files import atomic_write_text, sha256_file

STAGE_NAMES = ("uncond", "drr", "cxr")
BUNDLE_STAGES = ("uncond", "drr")  # the branch points the ablations need
STAGES_DIR = "stages"


class StageCheckpointError(RuntimeError):
    """A stage checkpoint that is missing, unfinished or does not match its provenance."""


def read_stage_final(stage_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, denoiser_config)`` of a finished stage in a training work dir.

    ``stage_dir`` is ``<ckpt_dir>/<stage>``; its ``final`` folder holds the EMA weights.
    """
    final = Path(stage_dir) / "final"
    if (final / "denoiser" / "config.json").is_file():
        return load_checkpoint(final / "denoiser")
    if (final / "config.json").is_file():
        tensors, cfg = load_checkpoint(final)
        if "denoiser" not in cfg:
            raise StageCheckpointError(f"{final}/config.json has no denoiser config")
        return unprefixed("denoiser", tensors), cfg["denoiser"]
    raise StageCheckpointError(
        f"{stage_dir} has no final EMA weights ({final} is missing): the stage has not finished"
    )


def find_diffusion_dir(work_dir: str | Path) -> Path:
    """The one ``<work_dir>/models/diffusion/<recipe>`` folder of a ``make weights`` run."""
    root = Path(work_dir) / "models" / "diffusion"
    found = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if len(found) != 1:
        raise StageCheckpointError(
            f"expected one training recipe under {root}, found {len(found)}"
            + (f" ({', '.join(p.name for p in found)}): pass the recipe folder" if found else "")
        )
    return found[0]


def add_stages(
    bundle_dir: str | Path,
    diffusion_dir: str | Path,
    stages: tuple[str, ...] = BUNDLE_STAGES,
    dtype: torch.dtype = torch.float16,
) -> dict:
    """Copy the finished ``stages`` of a training run into ``bundle_dir``; their provenance.

    ``diffusion_dir`` is ``<work>/models/diffusion/<recipe>`` (or a work dir holding exactly
    one recipe). Each stage is written under a temporary name and swapped into place; the
    provenance is rewritten last. Returns the provenance's ``stages`` entry.
    """
    from xr2ct_lib.models.bundle import PROVENANCE, check_bundle, read_provenance

    bundle_dir = check_bundle(bundle_dir)
    diffusion_dir = Path(diffusion_dir)
    if not diffusion_dir.is_dir():
        raise StageCheckpointError(f"training work dir {diffusion_dir} does not exist")
    if (diffusion_dir / "models" / "diffusion").is_dir():
        diffusion_dir = find_diffusion_dir(diffusion_dir)
    prov = read_provenance(bundle_dir)
    if prov is None:
        raise StageCheckpointError(f"{bundle_dir} has no {PROVENANCE}")
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; choose from {STAGE_NAMES}")
    # read everything first: an unfinished or foreign stage fails before anything is written
    read = {s: read_stage_final(diffusion_dir / s) for s in stages}
    own = _denoiser_config(bundle_dir)
    for stage, (_, config) in read.items():
        # None is a default another code version may have written out: not compared
        differ = sorted(k for k in own.keys() & config.keys() if not k.startswith("_")
                        and None not in (own[k], config[k]) and own[k] != config[k])  # fmt: skip
        if differ:
            raise StageCheckpointError(
                f"{diffusion_dir / stage} is not a stage of the denoiser in {bundle_dir} "
                f"(its {', '.join(differ)} differ{'s' if len(differ) == 1 else ''})"
            )
    steps = dict(zip(STAGE_NAMES, prov.get("schedule", {}).get("diffusion", []), strict=False))
    entries = dict(prov.get("stages", {}))
    root = bundle_dir / STAGES_DIR
    for stage, (state, config) in read.items():
        target = root / stage
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_checkpoint(target, state, config)  # temporary name, then swapped into place
        entries[stage] = {
            "steps": steps.get(stage),
            "dtype": str(dtype).removeprefix("torch."),
            "weights": "ema",
            "sha256": sha256_file(target / "model.safetensors"),
            "source": str(Path(diffusion_dir) / stage / "final"),
        }
    prov["stages"] = entries
    atomic_write_text(bundle_dir / PROVENANCE, json.dumps(prov, indent=2))
    return entries


def _denoiser_config(bundle_dir: Path) -> dict:
    cfg = json.loads((Path(bundle_dir) / "denoiser" / "config.json").read_text())
    return cfg["denoiser"] if "denoiser" in cfg and "scheduler" in cfg else cfg


def available_stages(bundle_dir: str | Path) -> list[str]:
    """The stages a bundle carries (listed in its provenance and present on disk)."""
    from xr2ct_lib.models.bundle import read_provenance

    listed = (read_provenance(bundle_dir) or {}).get("stages", {})
    root = Path(bundle_dir) / STAGES_DIR
    return [s for s in STAGE_NAMES if s in listed and (root / s / "model.safetensors").is_file()]


def read_stage(bundle_dir: str | Path, stage: str = "uncond"):
    """The float32 :class:`LatentDenoiser3D` of a bundle's stage checkpoint, checked against
    the sha256 its provenance records."""
    from xr2ct_lib.models.bundle import read_provenance
    from xr2ct_lib.models.denoiser import LatentDenoiser3D

    bundle_dir = Path(bundle_dir)
    entry = (read_provenance(bundle_dir) or {}).get("stages", {}).get(stage)
    target = bundle_dir / STAGES_DIR / stage
    if entry is None or not (target / "model.safetensors").is_file():
        raise StageCheckpointError(
            f"{bundle_dir} carries no '{stage}' stage checkpoint: add it from the training work "
            f"dir with `xr2ct add-stages {bundle_dir} --work-dir runs/weights-<profile>-long`"
        )
    if sha256_file(target / "model.safetensors") != entry["sha256"]:
        raise StageCheckpointError(
            f"{target}/model.safetensors does not match the sha256 in {bundle_dir}/provenance.json"
        )
    tensors, config = load_checkpoint(target)
    denoiser = LatentDenoiser3D.from_config(config)
    denoiser.load_state_dict(tensors)
    return denoiser.float().eval()
