"""LoRA adapters (``peft``) on the denoiser: adapt a trained generator to a new domain.

:func:`add_lora` injects low-rank adapters into the denoiser's attention projections, the
embedding projections of its ResNet blocks and their convolutions (``peft`` LoRA for
``nn.Linear`` and ``nn.Conv3d``), in place: the module keeps its class and ``forward``, only
the adapters train. B starts at zero, so a fresh adapter leaves the output unchanged.

An adapter folder holds ``adapter_model.safetensors`` (the adapter weights only) and
``adapter_config.json`` (rank, alpha, targets, the fingerprint of the bundle it was trained
on); :func:`save_lora` writes it atomically, :func:`load_lora` applies it to a denoiser and
refuses an adapter trained on another bundle. ``XRay2CTPAPipeline.load_lora`` and
``xr2ct generate --lora DIR`` use it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from xr2ct_lib.checkpoint import replace_dir
from xr2ct_lib.files import atomic_write_text

# attention q/k/v and output projections, the ResNet blocks' embedding projections and
# convolutions; not the input/output convolutions nor the time and condition embeddings
DEFAULT_TARGETS = r".*\.(qkv|out|conv1|conv2)$|.*\.emb\.1$"
WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"


def add_lora(
    denoiser: torch.nn.Module,
    rank: int = 4,
    alpha: float | None = None,
    targets: str = DEFAULT_TARGETS,
    dropout: float = 0.0,
) -> torch.nn.Module:
    """Inject LoRA adapters into ``denoiser`` (in place) and freeze everything else; return it.

    ``alpha`` defaults to ``rank`` (scale 1).
    """
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=int(rank), lora_alpha=float(alpha or rank), target_modules=targets,
                     lora_dropout=float(dropout), init_lora_weights=True)  # fmt: skip
    inject_adapter_in_model(cfg, denoiser)
    for name, p in denoiser.named_parameters():
        p.requires_grad_("lora_" in name)
    denoiser._xr2ct_lora = {"rank": int(rank), "alpha": float(alpha or rank),
                            "targets": targets, "dropout": float(dropout)}  # fmt: skip
    return denoiser


def has_lora(denoiser: torch.nn.Module) -> bool:
    return hasattr(denoiser, "_xr2ct_lora")


def lora_state(denoiser: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only (``peft`` names)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(denoiser)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def save_lora(directory: str | Path, denoiser: torch.nn.Module, base_key: str, extra=None) -> Path:
    """Write the adapters of ``denoiser`` (and the fingerprint ``base_key`` of the bundle they
    adapt) as safetensors + JSON, under a temporary name then swapped into place."""
    from safetensors.torch import save_file

    if not has_lora(denoiser):
        raise ValueError("this denoiser has no LoRA adapters (add_lora first)")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        save_file(lora_state(denoiser), str(tmp / WEIGHTS_NAME))
        config = {"format": 1, "library": "peft", **denoiser._xr2ct_lora, "base": base_key,
                  **(extra or {})}  # fmt: skip
        atomic_write_text(tmp / CONFIG_NAME, json.dumps(config, indent=2))
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_lora_config(directory: str | Path) -> dict:
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"LoRA adapter {directory}: missing {name}")
    return json.loads((directory / CONFIG_NAME).read_text())


def load_lora(
    denoiser: torch.nn.Module, directory: str | Path, base_key: str | None = None
) -> torch.nn.Module:
    """Add the adapters saved in ``directory`` to ``denoiser`` (in place); return it.

    With ``base_key`` the adapter must have been trained on that bundle (its fingerprint).
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    cfg = read_lora_config(directory)
    if base_key is not None and cfg.get("base") not in (None, base_key):
        raise ValueError(
            f"LoRA adapter {directory} was trained on bundle {cfg['base']}, not on this one "
            f"({base_key})"
        )
    if has_lora(denoiser):
        raise ValueError("this denoiser already has LoRA adapters")
    add_lora(denoiser, cfg["rank"], cfg["alpha"], cfg["targets"], cfg.get("dropout", 0.0))
    state = load_file(str(Path(directory) / WEIGHTS_NAME))
    result = set_peft_model_state_dict(denoiser, state)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise ValueError(f"LoRA adapter {directory}: {len(missing)} weights match no layer")
    return denoiser.eval()
