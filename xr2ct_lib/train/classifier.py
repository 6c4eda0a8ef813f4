"""Training the PE classifiers of Tables 1 and 7 on one split (train / validation patients).

Every training loop: AdamW, BCE with ``pos_weight`` for the 34 % prevalence, validation AUC
after every epoch, the best epoch's weights kept, early stopping, seeded, a progress bar.
The six-fold cross-validation that calls these is :mod:`xr2ct_lib.eval.classifier_cv`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from xr2ct_lib.config import Profile
from xr2ct_lib.models.classifiers import (
    CXRClassifier,
    LatentPEClassifier,
    SliceEncoder,
    SliceLSTMClassifier,
    logits_to_prob,
)
from xr2ct_lib.train.fit import flip_lr
from xr2ct_lib.utils import progress, torch_threads

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# Every classifier trains and reads on one torch thread, whatever the process has: the float
# sums then do not depend on the thread count, nor the tables on how the book was run.
THREADS = 1


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 32) -> np.ndarray:
    """Probabilities for ``x`` (eval mode, batched, on :data:`THREADS` threads)."""
    model.eval()
    with torch_threads(THREADS):
        return torch.cat(
            [logits_to_prob(model(x[i : i + batch])) for i in range(0, len(x), batch)]
        ).numpy()


def _auc(y, p) -> float:
    return float(roc_auc_score(y, p)) if len(set(np.asarray(y).tolist())) == 2 else float("nan")


def train_classifier(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train,
    x_val: torch.Tensor,
    y_val,
    epochs: int,
    lr: float = 1e-3,
    batch: int = 16,
    seed: int = 0,
    augment: Augment | None = None,
    patience: int = 5,
    desc: str = "classifier",
    keep_start: bool = False,
) -> tuple[nn.Module, pd.DataFrame]:
    """Fit ``model`` on :data:`THREADS` torch threads; return it with the weights of its best
    validation epoch, and the history."""
    with torch_threads(THREADS):
        return _train_classifier(model, x_train, y_train, x_val, y_val, epochs, lr, batch, seed,
                                 augment, patience, desc, keep_start)  # fmt: skip


def _validation_score(model, x_val, y_val) -> tuple[float, float, float]:
    """(score to maximise, validation AUC, validation loss)."""
    pv = predict(model, x_val)
    val_auc = _auc(y_val, pv)
    yv = torch.as_tensor(np.asarray(y_val), dtype=torch.float32)
    val_loss = float(F.binary_cross_entropy(torch.from_numpy(pv).clamp(1e-6, 1 - 1e-6), yv))
    return (val_auc if np.isfinite(val_auc) else -val_loss), val_auc, val_loss


def _train_classifier(model, x_train, y_train, x_val, y_val, epochs, lr, batch, seed, augment,
                      patience, desc, keep_start):  # fmt: skip
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    y_train = torch.as_tensor(np.asarray(y_train), dtype=torch.float32)
    pos = float(y_train.sum())
    pos_weight = torch.tensor((len(y_train) - pos) / max(pos, 1.0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    best = _validation_score(model, x_val, y_val)[0] if keep_start else -np.inf
    best_state, since, rows = copy.deepcopy(model.state_dict()), 0, []
    for epoch in progress(range(epochs), desc=desc, unit="epoch", leave=False):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        losses = []
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            x = x_train[idx]
            if augment is not None:
                x = augment(x, gen)
            loss = F.binary_cross_entropy_with_logits(
                model(x).reshape(-1), y_train[idx], pos_weight=pos_weight
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        score, val_auc, val_loss = _validation_score(model, x_val, y_val)
        rows.append(
            {
                "epoch": epoch,
                "train_loss": np.mean(losses),
                "val_auc": val_auc,
                "val_loss": val_loss,
            }
        )
        if score > best + 1e-4:
            best, best_state, since = score, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), pd.DataFrame(rows)


def fit_on_split(build: Callable[[], nn.Module], x: torch.Tensor, y, split, profile: Profile,
                 epochs: int, seed: int, desc: str, augment: Augment | None = None,
                 patience: int = 5, lr: float | None = None,
                 keep_start: bool = False) -> nn.Module:  # fmt: skip
    """Seed, build the model and train it on ``x[split["train"]]``, stopping on ``split["val"]``.

    ``keep_start``: the built model's own validation score is the one to beat (fine-tuning a
    pretrained model: it is kept when no epoch improves on it)."""
    y = np.asarray(y)
    tr, va = split["train"], split["val"]
    torch.manual_seed(seed)
    model, _ = train_classifier(
        build(), x[tr], y[tr], x[va], y[va], epochs=epochs, lr=lr or profile.classifier_lr,
        seed=seed, augment=augment, desc=desc, patience=patience, keep_start=keep_start,
    )  # fmt: skip
    return model


# ------------------------------------------------------------------ CTPA latent DenseNet


def _halves(z: np.ndarray, idx) -> torch.Tensor:
    """Patients (N, 2, C, d, h, w) → samples (2N, C, d, h, w): each half is a sample."""
    return torch.from_numpy(np.ascontiguousarray(z[idx])).flatten(0, 1).float()


def score_latents(model: nn.Module, z: np.ndarray) -> np.ndarray:
    """Patient probability: mean over its two halves. ``z``: (N, 2, C, d, h, w) normalised."""
    return predict(model, _halves(z, slice(None))).reshape(-1, 2).mean(1)


def fit_latent_classifier(
    profile: Profile, z: np.ndarray, labels, split, epochs: int, seed: int, desc: str,
    init: LatentPEClassifier | None = None, patience: int = 5,
) -> LatentPEClassifier:  # fmt: skip
    """The profile's latent DenseNet on the ``train`` patients' halves (``val`` for stopping);
    with ``init`` (a pretrained classifier, left unchanged) a copy of it is fine-tuned at a
    tenth of the learning rate, and kept as it is unless an epoch beats it on ``val``."""
    halves = {k: np.stack([2 * v, 2 * v + 1], axis=1).ravel() for k, v in split.items()}
    build = (lambda: LatentPEClassifier.for_profile(profile)) if init is None else (
        lambda: copy.deepcopy(init))  # fmt: skip
    return fit_on_split(
        build, _halves(z, slice(None)), np.repeat(np.asarray(labels), 2), halves, profile,
        epochs, seed, desc, augment=flip_lr, patience=patience,
        lr=None if init is None else profile.classifier_lr / 10, keep_start=init is not None,
    )  # fmt: skip


# ------------------------------------------------------------------ X-ray classifier


def cxr_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    gain = 1 + 0.2 * (torch.rand(len(x), 1, 1, 1, generator=gen) - 0.5)
    shift = [int(s) for s in torch.randint(-4, 5, (2,), generator=gen)]
    return (torch.roll(x, shift, dims=(2, 3)) * gain).clamp(0, 1)


def fit_cxr_classifier(
    profile: Profile, x: torch.Tensor, labels, split, epochs: int, seed: int, desc: str
) -> CXRClassifier:
    """The CNN on X-rays (N, 3, S, S), from scratch, on the ``train`` patients."""
    return fit_on_split(
        CXRClassifier, x, labels, split, profile, epochs, seed, desc, augment=cxr_augment
    )


# ------------------------------------------------------------------ INSPECT-style slices + LSTM


def slice_labels(clot: np.ndarray) -> np.ndarray:
    """A slice is positive when it contains clot voxels: (N, D, H, W) → (N, D)."""
    return (clot.reshape(*clot.shape[:2], -1).sum(-1) > 0).astype(np.float32)


def subsample_slices(n_total: int, n_slices: int | None) -> np.ndarray:
    """Evenly spaced slice indices (all when ``n_slices`` is None or ≥ the total)."""
    if n_slices is None or n_slices >= n_total:
        return np.arange(n_total)
    return np.linspace(0, n_total - 1, n_slices).round().astype(int)


class _SliceHead(nn.Module):
    """Wrap a SliceEncoder so that ``forward`` gives the slice logit (for train_classifier)."""

    def __init__(self, enc: SliceEncoder) -> None:
        super().__init__()
        self.enc = enc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc.slice_logit(x)


@torch.no_grad()
def slice_features(enc: SliceEncoder, ct: torch.Tensor) -> torch.Tensor:
    """Features (N, D, dim) of every slice of volumes (N, D, H, W)."""
    enc.eval()
    n, d = ct.shape[:2]
    flat = ct.reshape(n * d, 1, *ct.shape[2:])
    return torch.cat([enc(flat[i : i + 256]) for i in range(0, len(flat), 256)]).reshape(n, d, -1)


def fit_slice_encoder(
    profile: Profile,
    vol: torch.Tensor,
    slice_y: np.ndarray,
    split,
    epochs: int,
    seed: int,
    desc: str,
    slices_per_epoch: int = 1024,
) -> SliceEncoder:
    """INSPECT's slice CNN, trained with slice labels ``slice_y`` (N, D) of the ``train`` patients.

    The training set is every positive slice and up to ``slices_per_epoch`` random negatives.
    """
    torch.manual_seed(seed)
    enc = SliceEncoder()
    tr, va = split["train"], split["val"]
    s_x = vol[tr].reshape(-1, 1, *vol.shape[2:])
    s_y = slice_y[tr].reshape(-1)
    rng = np.random.default_rng(seed)
    pos, negatives = np.flatnonzero(s_y > 0), np.flatnonzero(s_y == 0)
    neg = rng.choice(negatives, min(slices_per_epoch, len(negatives)), replace=False)
    pick = np.concatenate([pos, neg])
    train_classifier(
        _SliceHead(enc), s_x[pick], s_y[pick], vol[va].reshape(-1, 1, *vol.shape[2:]),
        slice_y[va].reshape(-1), epochs=max(2, epochs // 2), lr=profile.classifier_lr, seed=seed,
        batch=64, augment=flip_lr, desc=desc,
    )  # fmt: skip
    return enc


def fit_slice_lstm(
    profile: Profile, feats: torch.Tensor, labels, split, epochs: int, seed: int, desc: str
) -> SliceLSTMClassifier:
    """The LSTM over frozen slice features (N, S, dim) of the ``train`` patients."""
    return fit_on_split(
        lambda: SliceLSTMClassifier(feats.shape[-1]), feats, labels, split, profile,
        max(epochs, 10), seed, desc,
    )  # fmt: skip
