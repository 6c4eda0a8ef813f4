"""The cohort's VAE latents, cached per patient, and their dataset-wide normaliser
(:class:`~xr2ct_lib.models.normalizer.LatentNormalizer`).

- :func:`encode_cohort` writes ``<run_dir>/latents/<pid>.safetensors`` (``z``: the two half
  volumes' latents, (2, C, D/2, h, w)), ``latents/normalizer.json`` and the key they were
  made under, ``latents/encoded.json`` (the VAE's weights and the prepared files);
  :func:`load_latents` and :func:`load_normalizer` read them back, and only read: a missing
  cache is an error that says which step writes it (:mod:`xr2ct_lib.run.encode`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from xr2ct_lib.checkpoint import state_sha256
from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.files import atomic_write_text, write_safetensors
from xr2ct_lib.models.normalizer import LatentNormalizer
from xr2ct_lib.utils import progress, recipe_key

STAMP = "encoded.json"  # the key of the latents in a latent folder


def latent_dir(cfg: RunConfig) -> Path:
    """This run's cached latents: of chapter 2's VAE (``weights="trained"``) or of the shipped
    bundle's VAE (``"shipped"``: written by :func:`xr2ct_lib.run.encode.encode_missing`)."""
    return cfg.run_dir.joinpath(
        *(("shipped", "latents") if cfg.weights == "shipped" else ("latents",))
    )


def _missing(cfg: RunConfig, what: str) -> str:
    if cfg.weights == "shipped":
        return f"{what}: encode the cohort with the shipped VAE first (run.encode.encode_missing)"
    return f"{what}: run notebook 02 first"


def _encoding_key(vae, cohort: PreparedCohort, held_out: list[int]) -> str | None:
    """What a cohort's latents depend on: the VAE's weights and every prepared file (None
    when a file has no key: then they are always encoded again)."""
    keys = [cohort.stored_key(pid) for pid in cohort.ids]
    if any(k is None for k in keys):
        return None
    return recipe_key(
        vae=state_sha256(vae.state_dict()), scaling=getattr(vae, "scaling_factor", None),
        kind=getattr(vae, "kind", None), held_out=held_out,
        patients=list(zip(cohort.ids, map(int, cohort.folds), keys, strict=True)),
    )  # fmt: skip


@torch.no_grad()
def encode_cohort(cfg: RunConfig, vae, cohort: PreparedCohort) -> LatentNormalizer:
    """Encode every patient's two halves with ``vae``; write the latents and the normaliser.

    The normaliser's min/max come from the training folds of the book's main split (the
    profile's ``test_fold`` and its validation fold are left out), as the reference
    implementation fixes dataset-wide constants.

    Latents already written by the same VAE weights from the same prepared files are kept
    (``latents/encoded.json`` holds their key): encoding again under another thread count
    changes the floats' last bits, hence the normaliser, hence the recipe key of every
    diffusion run trained on it (a resumed ``xr2ct train`` would not find its checkpoints).
    """
    p = cfg.profile
    held_out = sorted({p.test_fold, (p.test_fold + 1) % p.n_folds})  # as fold_split's test, val
    d = latent_dir(cfg)
    key = _encoding_key(vae, cohort, held_out)
    stamp = d / STAMP
    if (
        key is not None
        and stamp.is_file()
        and json.loads(stamp.read_text()).get("key") == key
        and (d / "normalizer.json").is_file()
        and all((d / f"{pid}.safetensors").is_file() for pid in cohort.ids)
    ):
        return LatentNormalizer.load(d / "normalizer.json")
    stamp.unlink(missing_ok=True)
    lo, hi = np.inf, -np.inf
    for pid, fold in progress(
        list(zip(cohort.ids, cohort.folds, strict=True)), desc="encode", unit="patient"
    ):
        z = vae.encode_halves(cohort.load(pid)["ct"]).float().cpu()
        write_safetensors(d / f"{pid}.safetensors", {"z": z})
        if fold not in held_out:
            lo, hi = min(lo, float(z.min())), max(hi, float(z.max()))
    norm = LatentNormalizer(lo, hi, {"vae": vae.describe(), "excluded_folds": held_out})
    norm.save(d / "normalizer.json")
    if key is not None:
        atomic_write_text(stamp, json.dumps({"key": key}))
    return norm


def load_normalizer(cfg: RunConfig) -> LatentNormalizer:
    """The normaliser :func:`encode_cohort` wrote (chapter 2), or the shipped bundle's."""
    f = latent_dir(cfg) / "normalizer.json"
    if not f.is_file():
        raise FileNotFoundError(_missing(cfg, f"{f} not found"))
    return LatentNormalizer.load(f)


def load_latents(
    cfg: RunConfig, ids=None, normalized: bool = False
) -> tuple[list[str], np.ndarray]:
    """``(ids, z)``: ``z`` (N, 2, C, D/2, h, w), in the cohort's order by default.

    ``normalized``: mapped to [−1, 1] with :func:`load_normalizer`'s constants, as float32
    (what the classifiers and the diffusion model read); else the raw VAE latents.
    """
    if ids is None:
        ids = PreparedCohort(cfg.run_dir).ids
    d = latent_dir(cfg)
    missing = [i for i in ids if not (d / f"{i}.safetensors").is_file()]
    if missing:
        raise FileNotFoundError(_missing(cfg, f"no latents for {missing[:5]} in {d}"))
    z = np.stack([load_file(str(d / f"{i}.safetensors"))["z"].numpy() for i in ids])
    if normalized:
        z = load_normalizer(cfg).normalize(z).astype(np.float32)
    return list(ids), z
