"""Training the PE classifiers and running them through six-fold cross-validation.

Every training loop: AdamW, BCE with ``pos_weight`` for the 34 % prevalence, validation AUC
after every epoch, the best epoch's weights kept, early stopping, seeded, a progress bar.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from xr2ct_lib.config import RunConfig
from xr2ct_lib.eval.crossval import CVResult, run_cv
from xr2ct_lib.models.classifiers import (
    CXRClassifier,
    LatentPEClassifier,
    SliceEncoder,
    SliceLSTMClassifier,
    load_classifier,
    logits_to_prob,
    save_classifier,
)
from xr2ct_lib.utils import progress

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 32) -> np.ndarray:
    """Probabilities for ``x`` (eval mode, batched)."""
    model.eval()
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
) -> tuple[nn.Module, pd.DataFrame]:
    """Fit ``model``; return it with the weights of its best validation epoch, and the history."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    y_train = torch.as_tensor(np.asarray(y_train), dtype=torch.float32)
    pos = float(y_train.sum())
    pos_weight = torch.tensor((len(y_train) - pos) / max(pos, 1.0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    best, best_state, since, rows = -np.inf, copy.deepcopy(model.state_dict()), 0, []
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
        pv = predict(model, x_val)
        val_auc = _auc(y_val, pv)
        yv = torch.as_tensor(np.asarray(y_val), dtype=torch.float32)
        val_loss = float(F.binary_cross_entropy(torch.from_numpy(pv).clamp(1e-6, 1 - 1e-6), yv))
        rows.append(
            {
                "epoch": epoch,
                "train_loss": np.mean(losses),
                "val_auc": val_auc,
                "val_loss": val_loss,
            }
        )
        score = val_auc if np.isfinite(val_auc) else -val_loss
        if score > best + 1e-4:
            best, best_state, since = score, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), pd.DataFrame(rows)


def flip_lr(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Left-right flip of a random half of the batch."""
    m = torch.rand(len(x), generator=gen) < 0.5
    x = x.clone()
    x[m] = x[m].flip(-1)
    return x


# ------------------------------------------------------------------ CTPA latent DenseNet


def _halves(z: np.ndarray, idx) -> torch.Tensor:
    """Patients (N, 2, C, d, h, w) → samples (2N, C, d, h, w): each half is a sample."""
    return torch.from_numpy(np.ascontiguousarray(z[idx])).flatten(0, 1).float()


def score_latents(model: nn.Module, z: np.ndarray) -> np.ndarray:
    """Patient probability: mean over its two halves. ``z``: (N, 2, C, d, h, w) normalised."""
    return predict(model, _halves(z, slice(None))).reshape(-1, 2).mean(1)


def cv_latent_classifier(
    cfg: RunConfig, z: np.ndarray, labels, folds, ids, folds_to_run=None, epochs: int | None = None
) -> CVResult:
    """Six-fold CV of the latent DenseNet; fold k's model goes to ``models/latent_classifier``."""
    labels = np.asarray(labels)
    epochs = cfg.profile.classifier_epochs if epochs is None else epochs

    def fit_predict(split):
        k = int(np.asarray(folds)[split["test"][0]])
        torch.manual_seed(cfg.seed + k)
        model = LatentPEClassifier.for_profile(cfg.profile)
        model, _ = train_classifier(
            model, _halves(z, split["train"]), np.repeat(labels[split["train"]], 2),
            _halves(z, split["val"]), np.repeat(labels[split["val"]], 2),
            epochs=epochs, seed=cfg.seed + k, augment=flip_lr, desc=f"latent DenseNet fold {k}",
        )  # fmt: skip
        save_classifier(
            model, cfg.run_dir / "models" / "latent_classifier" / f"fold{k}", test_fold=k
        )
        return {
            "val": score_latents(model, z[split["val"]]),
            "test": score_latents(model, z[split["test"]]),
        }

    return run_cv(fit_predict, labels, folds, ids, cfg.profile.n_folds, folds_to_run)


def predict_with_fold_models(cfg: RunConfig, z: np.ndarray, test_folds) -> np.ndarray:
    """Score latents (N, 2, C, d, h, w) with the latent classifier of each patient's test fold.

    This is how generated CTPA is read: by the classifier trained on real CTPA of the other
    folds, never one that saw the patient.
    """
    test_folds = np.asarray(test_folds).astype(int)
    out = np.full(len(z), np.nan)
    for k in np.unique(test_folds):
        d = Path(cfg.run_dir) / "models" / "latent_classifier" / f"fold{k}"
        if not (d / "config.json").is_file():
            raise FileNotFoundError(
                f"no latent classifier for test fold {k} in {d}: run notebook 08"
            )
        m = test_folds == k
        out[m] = score_latents(load_classifier(d), z[m])
    return out


# ------------------------------------------------------------------ X-ray classifier


def cv_cxr_classifier(
    cfg: RunConfig,
    images: np.ndarray,
    labels,
    folds,
    ids,
    folds_to_run=None,
    epochs: int | None = None,
) -> CVResult:
    """Six-fold CV of the CNN on X-rays (N, 3, S, S), trained from scratch per fold."""
    labels = np.asarray(labels)
    x = torch.from_numpy(images).float()
    epochs = cfg.profile.classifier_epochs if epochs is None else epochs

    def fit_predict(split):
        k = int(np.asarray(folds)[split["test"][0]])
        torch.manual_seed(cfg.seed + k)
        model, _ = train_classifier(
            CXRClassifier(), x[split["train"]], labels[split["train"]], x[split["val"]],
            labels[split["val"]], epochs=epochs, seed=cfg.seed + k, augment=_cxr_augment,
            desc=f"CXR CNN fold {k}",
        )  # fmt: skip
        return {"val": predict(model, x[split["val"]]), "test": predict(model, x[split["test"]])}

    return run_cv(fit_predict, labels, folds, ids, cfg.profile.n_folds, folds_to_run)


def _cxr_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    gain = 1 + 0.2 * (torch.rand(len(x), 1, 1, 1, generator=gen) - 0.5)
    shift = [int(s) for s in torch.randint(-4, 5, (2,), generator=gen)]
    return (torch.roll(x, shift, dims=(2, 3)) * gain).clamp(0, 1)


# ------------------------------------------------------------------ INSPECT-style slices + LSTM


def slice_labels(clot: np.ndarray) -> np.ndarray:
    """A slice is positive when it contains clot voxels: (N, D, H, W) → (N, D)."""
    return (clot.reshape(*clot.shape[:2], -1).sum(-1) > 0).astype(np.float32)


def subsample_slices(n_total: int, n_slices: int | None) -> np.ndarray:
    """Evenly spaced slice indices (all when ``n_slices`` is None or ≥ the total)."""
    if n_slices is None or n_slices >= n_total:
        return np.arange(n_total)
    return np.linspace(0, n_total - 1, n_slices).round().astype(int)


@torch.no_grad()
def _slice_features(enc: SliceEncoder, ct: torch.Tensor) -> torch.Tensor:
    enc.eval()
    n, d = ct.shape[:2]
    flat = ct.reshape(n * d, 1, *ct.shape[2:])
    return torch.cat([enc(flat[i : i + 256]) for i in range(0, len(flat), 256)]).reshape(n, d, -1)


def cv_slice_lstm(
    cfg: RunConfig,
    ct: np.ndarray,
    clot: np.ndarray,
    labels,
    folds,
    ids,
    n_slices: dict[str, int | None],
    folds_to_run=None,
    epochs: int | None = None,
    slices_per_epoch: int = 1024,
) -> dict[str, CVResult]:
    """INSPECT-style CV: per fold one slice encoder (slice labels from the clot masks), frozen;
    then one LSTM per entry of ``n_slices`` (name → number of slices, None = all)."""
    labels = np.asarray(labels)
    epochs = cfg.profile.classifier_epochs if epochs is None else epochs
    vol = torch.from_numpy(ct).float()
    sl = slice_labels(clot)
    cache: dict[int, torch.Tensor] = {}

    def features_for_fold(split) -> torch.Tensor:
        k = int(np.asarray(folds)[split["test"][0]])
        if k not in cache:
            torch.manual_seed(cfg.seed + k)
            enc = SliceEncoder()
            # slice-level training set: every positive slice + as many random negatives
            tr = split["train"]
            s_x = vol[tr].reshape(-1, 1, *vol.shape[2:])
            s_y = torch.from_numpy(sl[tr].reshape(-1))
            rng = np.random.default_rng(cfg.seed + k)
            pos = np.flatnonzero(s_y.numpy() > 0)
            negatives = np.flatnonzero(s_y.numpy() == 0)
            neg = rng.choice(negatives, min(slices_per_epoch, len(negatives)), replace=False)
            pick = np.concatenate([pos, neg])
            va = split["val"]
            v_x = vol[va].reshape(-1, 1, *vol.shape[2:])
            v_y = sl[va].reshape(-1)
            head = _SliceHead(enc)
            train_classifier(
                head, s_x[pick], s_y[pick].numpy(), v_x, v_y, epochs=max(2, epochs // 2),
                seed=cfg.seed + k, batch=64, augment=flip_lr, desc=f"slice CNN fold {k}",
            )  # fmt: skip
            cache[k] = _slice_features(enc, vol)
        return cache[k]

    results = {}
    for name, n in n_slices.items():
        idx = subsample_slices(vol.shape[1], n)

        def fit_predict(split, idx=idx, name=name):
            k = int(np.asarray(folds)[split["test"][0]])
            feats = features_for_fold(split)[:, idx]
            torch.manual_seed(cfg.seed + k)
            model, _ = train_classifier(
                SliceLSTMClassifier(feats.shape[-1]), feats[split["train"]], labels[split["train"]],
                feats[split["val"]], labels[split["val"]], epochs=max(epochs, 10),
                seed=cfg.seed + k, desc=f"LSTM ({name}) fold {k}",
            )  # fmt: skip
            return {
                "val": predict(model, feats[split["val"]]),
                "test": predict(model, feats[split["test"]]),
            }

        results[name] = run_cv(fit_predict, labels, folds, ids, cfg.profile.n_folds, folds_to_run)
    return results


class _SliceHead(nn.Module):
    """Wrap a SliceEncoder so that ``forward`` gives the slice logit (for train_classifier)."""

    def __init__(self, enc: SliceEncoder) -> None:
        super().__init__()
        self.enc = enc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc.slice_logit(x)
