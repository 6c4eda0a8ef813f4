"""Checkpoints as safetensors + a JSON config, written atomically; nothing is ever unpickled."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Save ``tensors`` (flat name → tensor) and ``config`` into ``directory``.

    The directory is assembled under a temporary name and renamed in one step, so a
    reader sees either the old checkpoint or the new one, never a mix.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(flat, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``(tensors, config)`` written by :func:`save_checkpoint`."""
    directory = Path(directory)
    weights, config = directory / "model.safetensors", directory / "config.json"
    for f in (weights, config):
        if not f.is_file():
            raise FileNotFoundError(f"checkpoint {directory}: missing {f.name}")
    return load_file(str(weights)), json.loads(config.read_text())


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Namespace a state dict so several modules share one safetensors file."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}
