"""Small shared helpers: seeding, devices, progress bars, a map over worker processes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: `xr2ct validate-manifest` starts fast
    import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (legacy global state used by some libraries)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with torch's global RNG seeded to ``seed``, restoring the state afterwards.

    For building networks deterministically without reseeding the caller's RNG.
    """
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def module_device(module) -> torch.device:
    """The device of a module's first parameter (CPU for plain callables or parameterless nets)."""
    import torch

    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            return p.device
    return torch.device("cpu")


def progress(iterable=None, **kwargs):
    """A text tqdm bar (no widgets), so it shows in terminals, JupyterLab and papermill logs."""
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    # XR2CT_NO_PROGRESS=1 silences every bar, also those a caller enables explicitly
    kwargs["disable"] = bool(kwargs.get("disable")) or os.environ.get("XR2CT_NO_PROGRESS") == "1"
    return tqdm(iterable, **kwargs)


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run a block with torch on ``threads`` intra-op threads, restoring the count afterwards.

    CPU kernels split their float sums by thread, so a result trained under 2 threads
    differs from one under 1 in the last bits, and a weak model can move by whole AUC points:
    a table must not depend on how many threads ran it.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _limit_threads(threads: int) -> None:
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def parallel_map(fn, items, workers: int = 1, **bar) -> list:
    """``[fn(x) for x in items]`` with a progress bar (``bar``: tqdm's options), in this
    process, or in ``workers`` forked processes (spawned where there is no fork) that share
    the cores: torch and SimpleITK get ``cores // workers`` threads in each. The results keep
    the order of ``items``; ``fn`` must be picklable (a module-level function)."""
    items = list(items)
    workers = max(1, min(int(workers), len(items) or 1))
    bar.setdefault("total", len(items))
    if workers == 1:
        return [fn(x) for x in progress(items, **bar)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_limit_threads, initargs=(threads,)
    ) as ex:
        return list(progress(ex.map(fn, items), **bar))


def recipe_key(**recipe) -> str:
    """A short stable hash of the recipe (JSON with sorted keys; non-JSON values as ``str``)."""
    text = json.dumps(recipe, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Skipped:
    """A figure or table this run cannot make, and why (e.g. a cohort without clot masks):
    decided by the library, shown by the notebook as one line. ``save_table`` and
    ``save_figure`` pass it through unchanged."""

    reason: str

    def __str__(self) -> str:
        return f"Skipped: {self.reason}"

    def _repr_markdown_(self) -> str:
        return f"*Skipped: {self.reason}*"
