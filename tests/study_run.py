"""A tiny run directory for the reader-kit tests: what ``gather_cases`` reads, nothing more.

Volumes are (D, H, W) = (12, 14, 16), deliberately not cubic, in the library's axis order
(z inferior→superior, y anterior→posterior, x right→left), with a bright marker in the
superior-anterior-right corner so a test can check how the browser orients each plane.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

SHAPE = (12, 14, 16)
MARK = 3  # marker edge in voxels


def volume(rng: np.random.Generator, generated: bool) -> np.ndarray:
    d, h, w = SHAPE
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    body = np.where(y**2 + x**2 < 0.8, -0.2, -1.0)
    noise = rng.normal(0, 0.02 if generated else 0.08, SHAPE)
    v = np.clip(body + 0.3 * z + noise, -1.0, 0.4).astype(np.float32)
    v[-MARK:, :MARK, :MARK] = 1.0  # superior, anterior, patient's right
    return v


def write_tiny_run(root: Path, n_patients: int = 26, n_pe: int = 10, n_generated: int = 18,
                   seed: int = 0) -> Path:  # fmt: skip
    """Write ``root/prepared`` (index + one file per patient) and ``root/generated``."""
    rng = np.random.default_rng(seed)
    ids = [f"sim{i:03d}" for i in range(n_patients)]
    labels = np.zeros(n_patients, int)
    labels[rng.choice(n_patients, n_pe, replace=False)] = 1
    (root / "prepared").mkdir(parents=True)
    (root / "generated").mkdir()
    pd.DataFrame({"patient_id": ids, "pe_label": labels, "fold": np.arange(n_patients) % 6}).to_csv(
        root / "prepared" / "index.csv", index=False
    )
    # generated volumes for a mix of PE and non-PE patients (at least 5 of each)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    k = n_generated // 2
    gen = set(pos[:k].tolist()) | set(neg[: n_generated - min(k, len(pos))].tolist())
    for i, pid in enumerate(ids):
        cxr = np.clip(rng.random((3, 24, 24)), 0, 1).astype(np.float32)
        cxr[:, :4, :4] = 1.0  # marker: the image's top left (patient's right, apex)
        save_file({"ct": torch.from_numpy(volume(rng, False)), "cxr": torch.from_numpy(cxr)},
                  str(root / "prepared" / f"{pid}.safetensors"))  # fmt: skip
        if i in gen:
            save_file({"ct": torch.from_numpy(volume(rng, True))},
                      str(root / "generated" / f"{pid}.safetensors"))  # fmt: skip
    return root
