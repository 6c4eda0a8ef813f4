"""Training the clot-supervised CTPA classifier on one split, and scoring volumes with it.

A :class:`~xr2ct_lib.models.classifiers.ClotSegmenter` learns, slice by slice, which pixels
are clot (targets: the simulated clot masks of the training patients). A patient's PE score
is its expected number of clot voxels (the sum of its clot probabilities): a clot anywhere
raises it, and nothing else has to be learnt from patient labels. (On the validation folds
of the workshop run it beat the mean of the few most clot-like voxels,
:func:`xr2ct_lib.models.classifiers.topk_score`, and the connected-component rules of the
thresholded map: false-positive voxels are as probable as a clot's.)
Its six-fold cross-validation is :func:`xr2ct_lib.eval.classifier_cv.cv_clot_classifier`.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from xr2ct_lib.config import Profile
from xr2ct_lib.models.classifiers import ClotSegmenter
from xr2ct_lib.utils import progress


def slice_windows(ct: torch.Tensor, context: int = 1) -> torch.Tensor:
    """Volumes (N, D, H, W) → every slice with its ``context`` neighbours each side as
    channels (N, D, 2·context + 1, H, W); the end slices repeat (replicate padding)."""
    d = ct.shape[1]
    idx = torch.arange(d)[:, None] + torch.arange(-context, context + 1)[None]
    return ct[:, idx.clamp(0, d - 1)]


MIN_SIDE = 16  # the U-Net pools in-plane four times


def clot_box(clot: np.ndarray, margin: int = 4) -> tuple[int, ...]:
    """(z0, z1, y0, y1, x0, x1): the box holding every clot voxel of masks (N, D, H, W),
    widened by ``margin`` voxels (in-plane to at least ``MIN_SIDE``), within the volume."""
    where = np.argwhere(np.asarray(clot) > 0)
    if len(where) == 0:
        raise ValueError("no clot voxel in the training masks")
    box = []
    for ax, n in zip((1, 2, 3), clot.shape[1:], strict=True):
        lo, hi = int(where[:, ax].min()) - margin, int(where[:, ax].max()) + margin + 1
        if ax > 1:
            if n < MIN_SIDE:
                raise ValueError(f"volumes of {n} voxels in-plane: the clot classifier needs "
                                 f"at least {MIN_SIDE}")  # fmt: skip
            grow = max(0, MIN_SIDE - (hi - lo))
            lo, hi = lo - grow // 2, hi + grow - grow // 2
            lo, hi = (0, hi - lo) if lo < 0 else (lo, hi)
            lo, hi = (lo - (hi - n), n) if hi > n else (lo, hi)
        box += [max(0, lo), min(n, hi)]
    return tuple(box)


def _crop(a, box) -> np.ndarray:
    z0, z1, y0, y1, x0, x1 = box
    return np.ascontiguousarray(np.asarray(a)[:, z0:z1, y0:y1, x0:x1])


def at_reader_size(model: ClotSegmenter, ct: np.ndarray) -> np.ndarray:
    """Volumes (N, D, H, W) resized (trilinear) to the size ``model`` was trained on, e.g. the
    generator's 64³ CTs for a reader of the CT at its own spacing; unchanged when they have
    it or the model records none."""
    from xr2ct_lib.data.preprocess import resize_volume

    ct = np.asarray(ct)
    if model.size is None or tuple(ct.shape[1:]) == model.size:
        return ct
    return np.stack([resize_volume(v, model.size) for v in ct])


def reader_input(model: ClotSegmenter, ct: np.ndarray) -> tuple[tuple[int, ...], torch.Tensor]:
    """(box, windows): the box ``model`` reads in volumes (N, D, H, W), first resized by
    :func:`at_reader_size` (its ``crop``, else the whole volume), and the slice windows
    inside it, (N, D', 2·context + 1, h, w)."""
    ct = at_reader_size(model, ct)
    box = model.crop or (0, ct.shape[1], 0, ct.shape[2], 0, ct.shape[3])
    return box, slice_windows(torch.from_numpy(_crop(ct, box)).float(), model.context)


def paste_box(values: np.ndarray, box: tuple[int, ...], shape) -> np.ndarray:
    """Values (N, D', h, w) of the voxels in ``box``, placed in zeros of ``shape`` (N, D, H, W)."""
    full = np.zeros(shape, np.float32)
    z0, z1, y0, y1, x0, x1 = box
    full[:, z0:z1, y0:y1, x0:x1] = values
    return full


def fit_clot_segmenter(
    profile: Profile,
    ct: np.ndarray,
    clot: np.ndarray,
    train_idx,
    epochs: int,
    seed: int,
    desc: str = "clot segmenter",
    negatives_per_positive: float = 2.0,
    batch: int = 32,
    pos_weight: float = 3.0,
    dice: bool = True,
    context: int = 2,
    init: ClotSegmenter | None = None,
    features: tuple[int, ...] | None = None,
    cosine: bool = False,
) -> ClotSegmenter:
    """Fit a clot segmenter on the slices of the ``train_idx`` patients (fine-tune a copy of
    ``init``, keeping its box and context, when given).

    Each epoch sees every slice that holds clot and as many (× ``negatives_per_positive``)
    slices without clot, drawn afresh from all training patients (with and without PE), so
    the network learns the defect against normal arteries. Loss: pixel BCE (clot pixels
    weighted ``pos_weight``) + soft Dice on the positive slices (MONAI ``DiceLoss``). With
    ``cosine`` the learning rate decays to zero over the epochs (a long pretraining ends on
    settled weights rather than on the last steps' noise).
    """
    from monai.losses import DiceLoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init is None:
        size = {} if features is None else {"features": tuple(features)}
        model = ClotSegmenter(crop=clot_box(np.asarray(clot)[train_idx]), context=context,
                              size=np.shape(ct)[1:], **size)  # fmt: skip
    else:
        model = copy.deepcopy(init)
    if model.size is not None and np.shape(ct)[1:] != model.size:
        raise ValueError(f"volumes of {np.shape(ct)[1:]} for a clot segmenter of "
                         f"{model.size}: train it on CTs and clot masks of its size")  # fmt: skip
    box, x = reader_input(model, np.asarray(ct)[train_idx])
    y = torch.from_numpy((_crop(np.asarray(clot)[train_idx], box) > 0).astype(np.float32))
    x, y = x.flatten(0, 1), y.flatten(0, 1)[:, None]  # (N·D, 2c+1, H, W), (N·D, 1, H, W)
    has = y.flatten(1).amax(1) > 0
    pos, neg = np.flatnonzero(has.numpy()), np.flatnonzero(~has.numpy())
    if len(pos) == 0:
        raise ValueError("no training slice holds clot: the clot segmenter needs PE patients")
    n_neg = min(len(neg), max(batch, int(round(negatives_per_positive * len(pos)))))
    dice_loss = DiceLoss(sigmoid=True, batch=True) if dice else None
    opt = torch.optim.AdamW(model.parameters(), lr=profile.classifier_lr * 3, weight_decay=1e-4)
    pw = torch.tensor(pos_weight)
    steps = epochs * -(-(len(pos) + n_neg) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    for _ in progress(range(epochs), desc=desc, unit="epoch", leave=False):
        model.train()
        pick = np.concatenate([pos, rng.choice(neg, n_neg, replace=False)])
        rng.shuffle(pick)
        for i in range(0, len(pick), batch):
            j = torch.from_numpy(pick[i : i + batch])
            xb, yb = x[j], y[j]
            flip = torch.from_numpy(rng.random(len(j)) < 0.5)
            xb[flip], yb[flip] = xb[flip].flip(-1), yb[flip].flip(-1)
            logit = model(xb)
            loss = F.binary_cross_entropy_with_logits(logit, yb, pos_weight=pw)
            if dice_loss is not None and yb.sum() > 0:
                loss = loss + dice_loss(logit, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    return model.eval()


@torch.no_grad()
def clot_probability(model: ClotSegmenter, ct: np.ndarray, batch: int = 128) -> np.ndarray:
    """Clot probability of every voxel of volumes (N, D, H, W) in [−1, 1] inside the model's
    box (:func:`clot_box`); zero outside it. Volumes of another size than the model's are
    read resized to it (:func:`at_reader_size`), and so are the probabilities."""
    model.eval()
    box, windows = reader_input(model, ct)
    x = windows.flatten(0, 1)
    out = torch.cat([torch.sigmoid(model(x[i : i + batch])) for i in range(0, len(x), batch)])
    shape = (len(ct), *(model.size or np.shape(ct)[1:]))
    return paste_box(out.reshape(*windows.shape[:2], *x.shape[-2:]).numpy(), box, shape)


def score_volumes(model: ClotSegmenter, ct: np.ndarray) -> np.ndarray:
    """Patient PE score of volumes (N, D, H, W): the expected number of clot voxels."""
    return clot_probability(model, ct).reshape(len(ct), -1).sum(1).astype(np.float64)
