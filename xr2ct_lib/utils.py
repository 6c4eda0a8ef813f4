"""Small shared helpers: seeding, devices, progress bars."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (legacy global state used by some libraries)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress(iterable=None, **kwargs):
    """A text tqdm bar (no widgets), so it shows in terminals, JupyterLab and papermill logs."""
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("disable", os.environ.get("XR2CT_NO_PROGRESS") == "1")
    return tqdm(iterable, **kwargs)
