"""Checkpoints as safetensors + a JSON config, written crash-safely; nothing is ever unpickled.

- :func:`save_checkpoint` / :func:`load_checkpoint`: one directory (``model.safetensors``
  + ``config.json``), assembled under a temporary name and swapped into place atomically
  (:func:`replace_dir`), so a reader sees the old directory or the new one, never none.
- :func:`save_versioned` / :func:`latest`: a training run's checkpoints, one directory per
  step (``step-00000200/``) and a pointer file ``LATEST`` replaced atomically once the new
  step is complete; older steps are removed only after the pointer moved. A kill at any
  moment leaves ``LATEST`` naming a complete checkpoint.
- RNG states, optimiser and LR-scheduler states as safetensors + JSON.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from xr2ct_lib.files import FileError, atomic_write_bytes, atomic_write_text  # noqa: F401 (older path)

POINTER = "LATEST"
LEGACY_LAST = "last"  # the layout before versioned steps: one directory, replaced in place
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


# ------------------------------------------------------------------------ directories
def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux ``renameat2``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem cannot
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: Path, target: Path) -> None:
    """Put the complete directory ``new`` at ``target``, replacing what is there atomically.

    With an existing ``target`` the two are swapped in one system call and the old one is
    then deleted. Where the filesystem cannot swap, the old directory is moved aside first
    and, if anything fails, moved back.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old directory
        return
    aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
    os.replace(target, aside / "d")
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(aside / "d", target)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _open_permissions(directory: Path) -> None:
    """mkdtemp and safetensors create 0700/0600; give the usual umask-based modes instead."""
    from xr2ct_lib.files import current_umask

    mask = current_umask()
    os.chmod(directory, 0o777 & ~mask)
    for f in directory.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~mask)


# ------------------------------------------------------------------------ checkpoints
def _write(directory: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Write a complete checkpoint under a temporary sibling name; return that name."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(flat, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        _open_permissions(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Save ``tensors`` (flat name → tensor) and ``config`` as the directory ``directory``.

    Assembled under a temporary name, then swapped in (:func:`replace_dir`): a reader, or a
    run killed at any moment, finds the old checkpoint or the new one.
    """
    directory = Path(directory)
    tmp = _write(directory, tensors, config)
    try:
        replace_dir(tmp, directory)
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
    return read_safetensors(weights), read_json(config)


def read_json(path: str | Path) -> dict:
    """A JSON object from ``path``; a broken file raises a ``FileError`` naming it."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileError(path, f"not valid JSON ({e}); the file is damaged: copy it again") from e
    if not isinstance(value, dict):
        raise FileError(path, f"expected a JSON object, found {type(value).__name__}")
    return value


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a truncated or foreign file raises a ``FileError``."""
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except SafetensorError as e:
        size = Path(path).stat().st_size
        raise FileError(
            path,
            f"not a complete safetensors file ({size} bytes; {e}): truncated or damaged, "
            "copy it again or retrain",
        ) from e


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step-{int(step):08d}"


def save_versioned(
    root: str | Path, step: int, tensors: dict[str, torch.Tensor], config: dict
) -> Path:
    """Write the checkpoint of ``step`` as ``root/step-NNNNNNNN`` and point ``root/LATEST`` at it.

    Order: the new step directory complete (temporary name, then rename), then the pointer
    replaced atomically, then older steps and leftovers of killed saves removed.
    """
    root = Path(root)
    target = step_dir(root, step)
    tmp = _write(target, tensors, config)
    replace_dir(tmp, target)
    atomic_write_text(root / POINTER, target.name + "\n")
    for p in root.iterdir():  # older steps, an older layout's last/, killed saves' temporaries
        if p.name.startswith(("step-", ".")) and p != target or p.name == LEGACY_LAST:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    return target


def latest(root: str | Path) -> Path | None:
    """The checkpoint ``root/LATEST`` points at (or an older run's ``root/last``); None if none."""
    root = Path(root)
    pointer = root / POINTER
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if not (target / "config.json").is_file():
            raise FileNotFoundError(f"{pointer} names {target.name}, which is incomplete")
        return target
    legacy = root / LEGACY_LAST
    return legacy if (legacy / "config.json").is_file() else None


# ---------------------------------------------------------------------- state records
def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Namespace a state dict so several modules share one safetensors file."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as JSON-ready lists."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global state)
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def flatten_optimizer(prefix: str, sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser ``state_dict`` as (prefixed tensors, JSON-ready rest)."""
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict] = {}
    for name, v in unprefixed(prefix, tensors).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = v
    for idx, sc in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(sc)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def lr_scheduler_state(sched) -> dict:
    """A ``LambdaLR`` state without its (unpicklable, rebuilt on load) lambdas."""
    sd = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    sd["lr_lambdas"] = [None] * len(sched.base_lrs)
    return sd


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of a state dict: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
