"""3D Grad-CAM (captum) of the latent PE classifier and of the clot reader, on the CT volume.

The classifier reads a half volume's latent; its Grad-CAM is computed at an inner dense
block (finer than the last one), upsampled to the latent and then to the half volume, and
the two halves are re-interleaved like the CT. The simulated cohort knows where the clots
are, so the map can be scored: does its peak fall on a clot (pointing game), and how much
of its mass lies on the clots, against what a map with no information would give.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from scipy import ndimage

from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.data.preprocess import merge_halves
from xr2ct_lib.models.classifiers import ClotSegmenter, LatentPEClassifier
from xr2ct_lib.models.normalizer import LatentNormalizer


def gradcam_latent(
    model: LatentPEClassifier, z: torch.Tensor, layer: str = "denseblock1"
) -> torch.Tensor:
    """Grad-CAM (B, d, h, w) of the PE logit for latents ``z`` (B, C, d, h, w), ReLU'd."""
    model.eval()
    target = getattr(model.net.features, layer)
    cam = LayerGradCam(model, target).attribute(z.float(), target=0, relu_attributions=True)
    return F.interpolate(cam, size=z.shape[2:], mode="trilinear", align_corners=False)[:, 0]


def gradcam_volume(
    model: LatentPEClassifier,
    z_patient: np.ndarray,
    volume_shape: tuple[int, int, int],
    layer: str = "denseblock1",
) -> np.ndarray:
    """Grad-CAM of one patient's two latent halves (2, C, d, h, w) on the (D, H, W) volume,
    normalised to [0, 1]."""
    d, h, w = volume_shape
    cams = gradcam_latent(model, torch.from_numpy(np.asarray(z_patient)), layer)
    up = F.interpolate(cams[:, None].detach(), size=(d // 2, h, w), mode="trilinear")[:, 0].numpy()
    cam = merge_halves(up[0], up[1])
    return cam / cam.max() if cam.max() > 0 else cam


def localisation_score(cam: np.ndarray, mask: np.ndarray, dilate: int = 2) -> dict[str, float]:
    """Pointing game hit, CAM mass on the (dilated) clot mask, and what chance would give.

    Chance for the pointing game is the mask's share of the volume (a uniformly random peak);
    for the mass it is the same share (a constant map).
    """
    m = ndimage.binary_dilation(mask > 0, iterations=dilate) if dilate else mask > 0
    if not m.any():
        raise ValueError("the clot mask is empty: localisation needs a PE patient with clots")
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    total = float(cam.sum())
    return {
        "hit": float(m[peak]),
        "mass_on_clot": float(cam[m].sum() / total) if total > 0 else 0.0,
        "chance": float(m.mean()),
    }


def random_baseline(
    mask: np.ndarray, n: int = 500, seed: int = 0, dilate: int = 2
) -> dict[str, float]:
    """Pointing game and mass of smooth random maps (blurred noise): an empirical chance."""
    rng = np.random.default_rng(seed)
    hits, mass = [], []
    for _ in range(n):
        cam = ndimage.gaussian_filter(rng.random(mask.shape), 3)
        cam = np.clip(cam - cam.mean(), 0, None)
        s = localisation_score(cam, mask, dilate)
        hits.append(s["hit"])
        mass.append(s["mass_on_clot"])
    return {"hit": float(np.mean(hits)), "mass_on_clot": float(np.mean(mass))}


def score_patients(
    models: dict[int, LatentPEClassifier],
    cohort: PreparedCohort,
    latents: dict[str, np.ndarray],
    normalizer: LatentNormalizer,
    source: str,
    seed: int = 0,
    n_random: int = 30,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Grad-CAM of each patient's raw latents, by the model of the patient's test fold, scored
    against its clots and against ``n_random`` smooth random maps (:func:`score_maps`).

    ``latents`` maps patient id → raw latents (2, C, d, h, w) (real or generated); ``models``
    maps test fold → latent DenseNet. Returns one row per patient and the maps by patient id.
    """
    fold_of = dict(zip(cohort.ids, cohort.folds, strict=True))
    cams = {}
    for pid, z_raw in latents.items():
        z = normalizer.normalize(np.asarray(z_raw)).astype(np.float32)
        cams[pid] = gradcam_volume(models[fold_of[pid]], z, cohort.load(pid)["ct"].shape)
    return score_maps(cams, cohort, source, seed, n_random), cams


def gradcam_clot(model: ClotSegmenter, ct: np.ndarray, layer: str = "upcat_1") -> np.ndarray:
    """Grad-CAM (D, H, W) in [0, 1] of a clot reader's summed clot probability on one volume
    (D, H, W) in [−1, 1], at a U-Net ``layer``: by default its last convolutional block,
    where Grad-CAM is usually taken (on the workshop cohort's 41 PE patients the encoder's
    ``down_2`` of the first, 64³ reader put its peak on a clot for 1 of them, ``upcat_1``
    for 19).

    The sum runs over slices, so the gradient reaching a slice's features is that of the
    slice's own sum: each slice's Grad-CAM is computed on its window of neighbours, upsampled
    to the slice and placed in the model's box, like its probabilities (at the model's size,
    :func:`~xr2ct_lib.train.clot.at_reader_size`).
    """
    from xr2ct_lib.train.clot import paste_box, reader_input

    model.eval()
    box, windows = reader_input(model, ct[None])
    x = windows[0]

    def summed(v):
        return torch.sigmoid(model(v)).flatten(1).sum(1)

    cam = LayerGradCam(summed, getattr(model.net, layer)).attribute(x, relu_attributions=True)
    cam = F.interpolate(cam.detach(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    full = paste_box(cam[:, 0].numpy()[None], box, (1, *(model.size or ct.shape)))[0]
    return full / full.max() if full.max() > 0 else full


def score_clot_reader(
    models: dict[int, ClotSegmenter],
    cohort: PreparedCohort,
    volumes: dict[str, np.ndarray],
    source: str,
    seed: int = 0,
    n_random: int = 30,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """:func:`gradcam_clot` of each patient's volume by its test fold's clot reader, scored
    like :func:`score_patients`; ``volumes`` maps patient id → CT (D, H, W) in [−1, 1]."""
    fold_of = dict(zip(cohort.ids, cohort.folds, strict=True))
    cams = {pid: gradcam_clot(models[fold_of[pid]], np.asarray(v)) for pid, v in volumes.items()}
    return score_maps(cams, cohort, source, seed, n_random), cams


def score_maps(
    cams: dict[str, np.ndarray], cohort: PreparedCohort, source: str, seed: int = 0,
    n_random: int = 30,
) -> pd.DataFrame:  # fmt: skip
    """One row per patient: :func:`localisation_score` of its map against its clots, and the
    mean of ``n_random`` smooth random maps (:func:`random_baseline`)."""
    rows = []
    for pid, cam in cams.items():
        arrays = cohort.load(pid)  # maps of a clot reader may be at its own size
        clot = arrays["clot" if arrays["clot"].shape == cam.shape else "clot_reader"]
        b = random_baseline(clot, n=n_random, seed=seed)
        rows.append({"patient": pid, "source": source, **localisation_score(cam, clot),
                     "random-map hit": b["hit"], "random-map mass": b["mass_on_clot"]})  # fmt: skip
    columns = ["patient", "source", "hit", "mass_on_clot", "chance", "random-map hit",
               "random-map mass"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def above_random(observed, random) -> float:
    """One-sided Wilcoxon signed-rank p that per-patient ``observed`` scores exceed their
    random-map baselines (paired by patient); 1.0 when every difference is zero."""
    from scipy.stats import wilcoxon

    d = np.asarray(observed, float) - np.asarray(random, float)
    if len(d) == 0 or not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue)


def localisation_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean pointing-game hit, mass on the clots and their chance levels, per source, with the
    one-sided Wilcoxon p of each against the random maps (:func:`above_random`)."""
    cols = ["hit", "random-map hit", "mass_on_clot", "random-map mass", "chance"]
    summary = scores.groupby("source", sort=False)[cols].mean()
    summary.insert(0, "patients", scores.groupby("source", sort=False).size())
    g = scores.groupby("source", sort=False)
    summary["p hit > random"] = g.apply(lambda t: above_random(t["hit"], t["random-map hit"]))
    summary["p mass > random"] = g.apply(
        lambda t: above_random(t["mass_on_clot"], t["random-map mass"])
    )
    return summary
