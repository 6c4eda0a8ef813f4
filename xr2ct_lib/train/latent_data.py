"""What the diffusion stages train on, and in which order: deterministic by construction.

- :class:`LatentPairDataset`: per diffusion sample, the latent, the DRR and X-ray
  embeddings and the PE label;
- :func:`batch_indices`: the global batch of a step, from per-epoch permutations that
  depend only on (seed, stage, epoch), so a resumed run sees the batches it would have seen.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

STAGES = ("uncond", "drr", "cxr")


class LatentPairDataset(Dataset):
    """Per diffusion sample: latent (C, D, h, w), DRR embedding (E,), CXR embedding (E,), label.

    ``drr_embeddings`` may be None (no DRR stage possible); ``labels`` None means unknown
    (stored as −1, ignored by the classification term).
    """

    def __init__(
        self,
        latents: torch.Tensor,
        cxr_embeddings: torch.Tensor | None = None,
        drr_embeddings: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        self.latents = torch.as_tensor(latents, dtype=torch.float32)
        n = self.latents.shape[0]
        if self.latents.ndim != 5:
            raise ValueError(f"latents must be (N, C, D, h, w), got {tuple(self.latents.shape)}")

        def check(name: str, a: torch.Tensor | None) -> torch.Tensor | None:
            if a is None:
                return None
            a = torch.as_tensor(a, dtype=torch.float32)
            if a.ndim != 2 or a.shape[0] != n:
                raise ValueError(f"{name} must be ({n}, E), got {tuple(a.shape)}")
            if not torch.isfinite(a).all():
                bad = (~torch.isfinite(a).all(1)).nonzero().flatten().tolist()
                raise ValueError(f"{name} has non-finite rows {bad[:10]}")
            return a

        self.cxr = check("cxr_embeddings", cxr_embeddings)
        self.drr = check("drr_embeddings", drr_embeddings)
        lab = torch.full((n,), -1, dtype=torch.long) if labels is None else torch.as_tensor(labels)
        if lab.shape != (n,):
            raise ValueError(f"labels must be ({n},), got {tuple(lab.shape)}")
        self.labels = lab.long()

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"latent": self.latents[i], "label": self.labels[i]}
        if self.cxr is not None:
            item["cxr"] = self.cxr[i]
        if self.drr is not None:
            item["drr"] = self.drr[i]
        return item

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        items = [self[i] for i in indices]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


# ------------------------------------------------------------------------- determinism
def seed_for(*parts: int) -> int:
    """A 32-bit seed from integers (NumPy's SeedSequence): the same parts, the same seed."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def batch_indices(n: int, batch: int, seed: int, stage: str, step: int) -> list[int]:
    """The global batch of ``step``: consecutive draws from per-epoch permutations.

    Depends only on (n, batch, seed, stage, step), never on what ran before.
    """
    s_idx = STAGES.index(stage)
    start = step * batch
    out, perms = [], {}
    for pos in range(start, start + batch):
        epoch = pos // n
        if epoch not in perms:
            g = torch.Generator().manual_seed(seed_for(seed, s_idx, epoch))
            perms[epoch] = torch.randperm(n, generator=g).tolist()
        out.append(perms[epoch][pos % n])
    return out
