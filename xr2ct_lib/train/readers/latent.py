"""The latent PE classifier pretrained on the book's RSPECT, as the paper pretrains its own.

The paper's "CTPA latent classifier" (Table 7, AUC 0.827) is pretrained on RSPECT latents
and then fine-tuned on the cohort. :meth:`LatentClassifier.pretrain` (:data:`READER`) trains
the profile's :class:`~xr2ct_lib.models.classifiers.LatentPEClassifier` on the normalised
latents of the simulated CTPA collection (:mod:`~xr2ct_lib.train.collection`), a tenth of it
held out for stopping and for the record; chapter 8 fine-tunes a copy per fold on the cohort
(:func:`~xr2ct_lib.eval.classifier_cv.cv_latent_classifier` with ``init``), and the
diffusion model's classification term reads generated latents with it. It lives in
``weights/<profile>-latent-classifier`` (safetensors + config.json with its pretraining
record: the collection, the VAE's sha256 and the normaliser it read with, which loading
checks).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from xr2ct_lib.config import Profile
from xr2ct_lib.models.classifiers import LatentPEClassifier
from xr2ct_lib.train import pretrained as pt
from xr2ct_lib.train.classifier import fit_latent_classifier, score_latents
from xr2ct_lib.train.readers.base import PretrainedReader


def holdout_split(n: int, val_share: float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
    """The collection patients the classifier trains on and those it holds out (a share
    ``val_share``, at least 2), both sorted: one split for training and its record."""
    n_val = max(2, int(round(val_share * n)))
    order = np.random.default_rng(seed).permutation(n)
    return {"train": np.sort(order[n_val:]), "val": np.sort(order[:n_val])}


def heldout_result(model, collection, normalizer, val_share: float = 0.1, seed: int = 0) -> dict:
    """The classifier on the collection patients :meth:`LatentClassifier.pretrain` held out
    (the same split): AUC overall and, against the patients without PE, by clot burden; the
    ``heldout.json`` record of :func:`~xr2ct_lib.train.pretrained.save_heldout`."""
    from sklearn.metrics import roc_auc_score

    val = holdout_split(len(collection), val_share, seed)["val"]
    n_val = len(val)
    z = normalizer.normalize(collection.z[val].astype(np.float32))
    s, y = score_latents(model, z), collection.labels[val]
    burden = collection.records["burden"].to_numpy()[val]
    by = {}
    for c in ("central", "lobar", "segmental"):
        m = burden == c
        if m.any() and (y == 0).any():
            keep = m | (y == 0)
            by[c] = {
                "patients": int(m.sum()),
                "auc": round(float(roc_auc_score(y[keep], s[keep])), 4),
            }
    seeds = collection.records["phantom_seed"].to_numpy()[val]
    return {"patients": int(n_val), "pe_patients": int(y.sum()),
            "seeds": [int(seeds.min()), int(seeds.max())],
            "auc": round(float(roc_auc_score(y, s)), 4), "by_burden": by,
            "population": "collection patients held out of its training",
            "command": READER.command.format(collection.info["profile"])}  # fmt: skip


class LatentClassifier(PretrainedReader):
    """The latent classifier: a :class:`~xr2ct_lib.models.classifiers.LatentPEClassifier`
    that reads normalised VAE latents, pretrained on the CTPA collection; only a run whose
    VAE and normaliser made those latents may read with it."""

    name, folder, inputs = "latent", "latent-classifier", "latents"
    command = "xr2ct pretrain-latent-classifier --profile {}"
    benchmark = "xr2ct pretrain-latent-classifier"
    shipped_sizes = {"smoke": (None, 3), "workshop": (None, 12)}  # epochs; the collection's
    from_scratch = "latent DenseNet trained here per fold from scratch"

    def input_size(self, profile: Profile) -> tuple:
        return tuple(profile.latent_shape)

    def describe_pretrained(self, pre: dict) -> str:
        return (f"latent DenseNet pretrained on {pre['patients']} simulated CTPA-collection "
                f"patients (held-out AUC {pre['val_auc']:.2f}; {pre['source']}), fine-tuned per "
                f"fold")  # fmt: skip

    def pretrain(
        self,
        profile: Profile,
        collection,
        normalizer,
        epochs: int,
        seed: int = 0,
        val_share: float = 0.1,
    ) -> tuple[LatentPEClassifier, dict]:
        """Fit the latent classifier on ``collection`` (:class:`~.collection.Collection`) latents
        normalised by ``normalizer`` (the bundle's); returns it with its pretraining record."""
        from sklearn.metrics import roc_auc_score

        pt.check_sizes(len(collection), epochs)
        t0 = time.time()
        z = normalizer.normalize(collection.z.astype(np.float32))
        split = holdout_split(len(z), val_share, seed)
        n_val = len(split["val"])
        model = fit_latent_classifier(profile, z, collection.labels, split, epochs, seed,
                                      "pretraining the latent classifier", patience=3)  # fmt: skip
        val_auc = roc_auc_score(
            collection.labels[split["val"]], score_latents(model, z[split["val"]])
        )
        info = collection.info
        record = {
            "profile": profile.name, "collection": info["command"],
            "patients": int(len(split["train"])), "val_patients": int(n_val),
            "pe_patients": int(collection.labels[split["train"]].sum()),
            "seeds": info["seeds"], "epochs": int(epochs), "seed": int(seed),
            "val_auc": round(float(val_auc), 4), "vae_sha256": info["vae_sha256"],
            "lr_schedule": "constant (AdamW), best epoch on the held-out tenth",
            "simulate_s": info.get("build_s_this_invocation"),
            "normalizer": normalizer.to_dict(), "input_size": list(profile.latent_shape),
            "train_s": round(time.time() - t0, 1),
        }  # fmt: skip
        return model, record

    def load(
        self,
        directory: str | Path,
        profile: Profile,
        cohort_seeds=(),
        vae_sha256: str | None = None,
        normalizer=None,
    ) -> LatentPEClassifier:
        """The pretrained classifier in ``directory``; raises when it was made for another profile
        or latent size, on latents of another VAE or normaliser, or on a cohort patient's seed."""
        command = self.command.format(profile.name)
        pre = pt.check_pretraining(directory, profile, self.input_size(profile), self.inputs,
                                   cohort_seeds, command)  # fmt: skip
        same_norm = {k: np.round(v, 6).tolist() for k, v in pre["normalizer"].items()
                     if k in ("min", "max")} == {k: np.round(v, 6).tolist()
                     for k, v in normalizer.to_dict().items() if k in ("min", "max")}  # fmt: skip
        if pre["vae_sha256"] != vae_sha256 or not same_norm:
            raise ValueError(f"{directory} was pretrained on latents of another VAE or normaliser "
                             f"than this run's: `{command}`")  # fmt: skip
        return pt.load_reader(directory, pre)

    def shipped(self, run, cohort_seeds=()) -> LatentPEClassifier | None:
        """The profile's shipped pretrained classifier when it was pretrained on latents of the
        run's VAE and normaliser (``run``: the :class:`~xr2ct_lib.config.RunConfig`; its
        ``weights``' networks, :mod:`xr2ct_lib.run.networks`), else None (a
        run's own VAE, or a profile without one: each fold then trains from scratch)."""
        from xr2ct_lib.checkpoint import state_sha256
        from xr2ct_lib.models.vae import load_vae
        from xr2ct_lib.run.latents import load_normalizer
        from xr2ct_lib.run.networks import networks_for

        cfg = run
        d = self.directory(cfg.profile.name)
        if not (d / "config.json").is_file():
            return None
        sha = state_sha256(load_vae(networks_for(cfg).vae).state_dict())
        try:
            return self.load(d, cfg.profile, cohort_seeds, sha, load_normalizer(cfg))
        except ValueError as e:
            if "another VAE" in str(e):
                return None
            raise


READER = LatentClassifier()
