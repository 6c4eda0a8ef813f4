"""Fig. 4: where generated latents fall among the real ones, in 2D projections.

Three groups of half-volume latents of the test fold, normalised to [−1, 1]: the real CTPA,
the CTPA generated from the X-rays (conditional) and unconditional samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.generation.load import sample_unconditional
from xr2ct_lib.run.latents import load_latents, load_normalizer

REAL, CONDITIONAL, UNCONDITIONAL = "real CTPA", "generated (conditional)", "unconditional"


def latent_groups(cfg: RunConfig, cohort: PreparedCohort, model) -> dict[str, np.ndarray]:
    """Half-volume latents (n, C, d, h, w) of the three groups: the unconditional ones are
    chapter 5's generations of the same patients with the condition dropped
    (``generated_uncond``), else half as many fresh samples as real halves (at least 4)."""
    shape = cfg.profile.latent_shape
    test_ids = cohort.split_ids(cfg.profile, "test")
    gen = load_generated(cfg)
    missing = [p for p in test_ids if p not in gen]
    if missing:
        raise FileNotFoundError(f"no generated volumes for {missing[:5]}: run chapter 5 first")
    real = load_latents(cfg, test_ids, normalized=False)[1]
    norm = load_normalizer(cfg)
    real = norm.normalize(real).reshape(-1, *shape)
    cond = norm.normalize(np.stack([gen[p]["z"] for p in test_ids])).reshape(-1, *shape)
    same = load_generated(cfg, "generated_uncond")
    if all(p in same for p in test_ids):
        uncond = norm.normalize(np.stack([same[p]["z"] for p in test_ids])).reshape(-1, *shape)
    else:
        uncond = sample_unconditional(cfg, model, max(len(real) // 2, 4))
    return {REAL: real, CONDITIONAL: cond, UNCONDITIONAL: uncond}


def project_2d(x: np.ndarray, seed: int, methods=("PCA", "t-SNE", "UMAP")) -> dict[str, np.ndarray]:
    """2D coordinates (n, 2) of the (flattened) rows of ``x`` by each method."""
    x = np.asarray(x).reshape(len(x), -1)
    n = len(x)
    out = {}
    for m in methods:
        if m == "PCA":
            from sklearn.decomposition import PCA

            out[m] = PCA(2, random_state=seed).fit_transform(x)
        elif m == "t-SNE":
            from sklearn.manifold import TSNE

            tsne = TSNE(2, perplexity=min(30, max(2, n // 4)), random_state=seed, init="pca")
            out[m] = tsne.fit_transform(x)
        elif m == "UMAP":
            from umap import UMAP

            out[m] = UMAP(n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1).fit_transform(x)
        else:
            raise ValueError(f"unknown projection {m!r}; use PCA, t-SNE or UMAP")
    return out


def centroid_distances(groups: dict[str, np.ndarray], reference: str = REAL) -> pd.DataFrame:
    """Euclidean distance of each group's mean latent to the ``reference`` group's mean."""
    centroid = {k: v.reshape(len(v), -1).mean(0) for k, v in groups.items()}
    rows = {
        k: {"latents": len(groups[k]), f"distance to the {reference} centroid":
            float(np.linalg.norm(c - centroid[reference]))}
        for k, c in centroid.items() if k != reference
    }  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("group")


def centroid_permutation_test(
    groups: dict[str, np.ndarray], a: str = CONDITIONAL, b: str = UNCONDITIONAL,
    reference: str = REAL, n_perm: int = 2000, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Is group ``a``'s centroid closer to ``reference``'s than group ``b``'s by more than
    chance? The gain ``d(b) − d(a)`` of the centroid distances, against its distribution when
    the latents of ``a`` and ``b`` are shuffled between the two groups (one-sided p, with the
    observed arrangement counted among the permutations)."""
    ref = groups[reference].reshape(len(groups[reference]), -1).mean(0)
    xa, xb = (groups[k].reshape(len(groups[k]), -1) for k in (a, b))
    pooled, n_a = np.concatenate([xa, xb]), len(xa)

    def gain(x_a, x_b):
        return float(np.linalg.norm(x_b.mean(0) - ref) - np.linalg.norm(x_a.mean(0) - ref))

    observed = gain(xa, xb)
    rng = np.random.default_rng(seed)
    null = np.empty(n_perm)
    for i in range(n_perm):
        p = rng.permutation(len(pooled))
        null[i] = gain(pooled[p[:n_a]], pooled[p[n_a:]])
    p_value = (1 + np.sum(null >= observed)) / (1 + n_perm)
    return {"gain": observed, "p": float(p_value), "permutations": int(n_perm)}


def centroid_reading(groups: dict[str, np.ndarray], seed: int = 0) -> str:
    """Fig. 4 read from the run's numbers: the centroid distances of the conditional and the
    unconditional latents (:func:`centroid_distances`), the permutation test of their
    difference (:func:`centroid_permutation_test`) and what that says."""
    d = centroid_distances(groups).iloc[:, -1]
    test = centroid_permutation_test(groups, seed=seed)
    n, gain = {k: len(v) for k, v in groups.items()}, test["gain"]
    if test["p"] < 0.05:
        verdict = ('the conditional latents are closer, as the paper reports ("the generated '
                   "samples closely follow the ground-truth samples. This is especially "
                   'apparent in comparison to the unconditional samples")')  # fmt: skip
    elif gain < 0:
        verdict = ("the unconditional latents sit closer: the book's short CPU training has not "
                   "reached the paper's behaviour")  # fmt: skip
    else:
        verdict = "groups of these sizes cannot tell the two apart"
    return (
        f"Centroid distance {d[CONDITIONAL]:.2f} conditional, {d[UNCONDITIONAL]:.2f} "
        f"unconditional: the conditional centroid is {abs(gain):.2f} "
        f"{'closer' if gain >= 0 else 'farther'} ({abs(gain) / d[UNCONDITIONAL]:.1%} of the "
        f"unconditional distance; one-sided "
        f"permutation p = {test['p']:.2g} over {test['permutations']} shuffles of the "
        f"{n[CONDITIONAL]} conditional and {n[UNCONDITIONAL]} unconditional latents, "
        f"{n[REAL]} real). So {verdict}."
    )
