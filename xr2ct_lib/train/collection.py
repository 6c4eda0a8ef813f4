"""The book's RSPECT: a public collection of simulated CT-only patients for pretraining.

The paper pretrains its diffusion model on RSPECT (over 7000 CTPA studies: unconditionally,
then conditioned on DRRs rendered from them) and its latent PE classifier on RSPECT latents;
RSPECT has no X-rays. The simulator's analogue is a collection of extra patients from phantom
seeds that neither the cohort nor any other set of extra patients uses
(:data:`~xr2ct_lib.train.pretrained.SEED_BLOCKS`, checked by
:func:`~xr2ct_lib.train.pretrained.check_disjoint`): per patient its CT's VAE latents (both
halves), its clean registered DRR, its PE label and the simulation's record. No X-ray: the
paired cohort stays the only place where the generator's X-ray stage learns.

Stored compactly under ``<out>/`` (default :func:`collection_dir`): shards of :data:`CHUNK` patients
(``shard-NNNNN.safetensors``: ``z`` (n, 2, C, d, h, w) float16 raw latents, ``drr`` (n, S, S)
float16, ``label`` (n,); the records as JSON in its metadata) and ``collection.json`` (size,
seeds, VAE, command, seconds). A shard depends only on its seeds, the profile and the VAE (its
key is in its metadata), so a build killed at any moment resumes where it stopped, and the
arrays do not depend on the number of workers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from xr2ct_lib.checkpoint import state_sha256
from xr2ct_lib.config import REPO_ROOT, Profile
from xr2ct_lib.files import atomic_write, atomic_write_text
from xr2ct_lib.train import pretrained as pt
from xr2ct_lib.utils import parallel_map, recipe_key, torch_threads

NAME = "ctpa_collection"
CHUNK = 50  # patients per shard: a kill loses at most one shard's work
SHIPPED = {"smoke": 200, "workshop": 2000}  # patients `make ctpa-collection` builds
INFO = "collection.json"
COMMAND = "xr2ct build-collection --profile {}"


def collection_dir(profile_name: str, patients: int, vae_dir: str | Path) -> Path:
    """Where a collection lives: ``runs/collections/<profile>-ctpa-<patients>-<VAE sha256
    prefix>`` (git-ignored: :data:`COMMAND` rebuilds it, deterministically); one folder per
    size and VAE, so that building one never replaces another."""
    from xr2ct_lib.models.vae import load_vae

    sha = state_sha256(load_vae(vae_dir).state_dict())[:12]
    return REPO_ROOT / "runs" / "collections" / f"{profile_name}-ctpa-{int(patients)}-{sha}"


def _shard_key(profile: Profile, seeds, vae_sha: str) -> str:
    from xr2ct_lib.data.phantom.base import GENERATOR_VERSION

    return recipe_key(kind=NAME, generator=GENERATOR_VERSION, profile=profile.name,
                      ct_size=profile.ct_size, drr_size=profile.drr_size,
                      cxr_size=profile.cxr_size, seeds=[int(seeds[0]), int(seeds[-1])],
                      n=len(seeds), vae=vae_sha)  # fmt: skip


def _shard_done(path: Path, key: str) -> bool:
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("key") == key
    except Exception:  # missing, truncated or not safetensors: build it again
        return False


def _build_shard(args) -> str:
    from xr2ct_lib.data.phantom import simulate_ct_batch
    from xr2ct_lib.models.vae import load_vae

    path, seeds, labels, profile, vae_dir, key = args
    b = simulate_ct_batch(seeds, labels, profile, with_drr=True)
    vae = load_vae(vae_dir)
    with torch.no_grad(), torch_threads(1):  # the same floats whatever the worker's threads
        z = torch.stack([vae.encode_halves(ct).float() for ct in b.ct])
    records = b.records.assign(phantom_seed=[int(s) for s in seeds], pe_label=labels)
    tensors = {"z": z.half().contiguous(), "drr": torch.from_numpy(b.drr[:, 0]).half(),
               "label": torch.as_tensor(labels, dtype=torch.int64)}  # fmt: skip
    meta = {"key": key, "records": records.to_json(orient="records")}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return path.name


def build_collection(
    profile: Profile,
    vae_dir: str | Path,
    patients: int,
    out: str | Path | None = None,
    seed: int = 0,
    workers: int = 1,
    cohort_seeds=(),
) -> Path:
    """Simulate ``patients`` CT-only patients (half with PE) and store their latents (the VAE
    in ``vae_dir``), DRRs, labels and records in ``out``; shards already there are kept.
    Seeds are checked against the cohort's (``cohort_seeds``) and every other set's first."""
    from xr2ct_lib.data.phantom import load_base
    from xr2ct_lib.data.phantom.build import simulation_spacing_mm
    from xr2ct_lib.models.bundle import show
    from xr2ct_lib.models.vae import load_vae

    pt.check_sizes(patients, 1)
    out = Path(out) if out else collection_dir(profile.name, patients, vae_dir)
    seeds = pt.seed_block(NAME, seed, patients)
    pt.check_disjoint(NAME, seeds, cohort_seeds)
    labels = pt.pretraining_labels(seed, patients)
    vae_sha = state_sha256(load_vae(vae_dir).state_dict())
    t0 = time.time()
    todo = []
    for i in range(0, patients, CHUNK):
        s, y = seeds[i : i + CHUNK], labels[i : i + CHUNK]
        key = _shard_key(profile, s, vae_sha)
        path = out / f"shard-{i // CHUNK:05d}.safetensors"
        if not _shard_done(path, key):
            todo.append((path, [int(v) for v in s], [int(v) for v in y], profile,
                         str(vae_dir), key))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / INFO).unlink(missing_ok=True)  # complete again only when every shard is
    load_base(simulation_spacing_mm(profile))  # once, before forking workers
    parallel_map(_build_shard, todo, workers, desc="CTPA collection", unit="shard")
    info = {
        "name": NAME, "profile": profile.name, "patients": int(patients),
        "pe_patients": int(labels.sum()), "seeds": [int(seeds[0]), int(seeds[-1])],
        "seed": int(seed), "shards": -(-patients // CHUNK), "vae": show(Path(vae_dir)),
        "vae_sha256": vae_sha, "command": COMMAND.format(profile.name),
        "build_s_this_invocation": round(time.time() - t0, 1), "shards_built": len(todo),
    }  # fmt: skip
    atomic_write_text(out / INFO, json.dumps(info, indent=1) + "\n")
    return out


@dataclass
class Collection:
    """A built collection in memory: raw latents, DRRs, labels, records and its info."""

    z: np.ndarray  # float16 (N, 2, C, d, h, w), raw VAE latents
    drr: np.ndarray  # float16 (N, S, S) in [0, 1]
    labels: np.ndarray  # int (N,)
    records: pd.DataFrame
    info: dict

    def __len__(self) -> int:
        return len(self.labels)

    def drr_images(self, idx) -> torch.Tensor:
        """DRRs ``idx`` as the encoders read them: (n, 3, S, S) float32."""
        x = torch.from_numpy(self.drr[idx].astype(np.float32))
        return x[:, None].expand(-1, 3, -1, -1).contiguous()

    def describe(self) -> str:
        i = self.info
        lo, hi = i["seeds"]
        return (f"simulated CTPA collection of {len(self)} CT-only patients "
                f"({int(self.labels.sum())} with PE; phantom seeds {lo}–{hi}, disjoint from "
                f"the cohort's; `{i['command']}`)")  # fmt: skip


def load_collection(
    directory: str | Path, profile: Profile, vae_dir: str | Path | None = None, cohort_seeds=()
) -> Collection:
    """Read a collection built by :func:`build_collection`; raises (naming the command that
    builds it) when it is missing or incomplete, made for another profile or with another VAE
    than the one in ``vae_dir``, or when its seeds meet the cohort's."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    command = COMMAND.format(profile.name)
    if not (directory / INFO).is_file():
        raise FileNotFoundError(f"{directory}: no complete CTPA collection; build it with "
                                f"`{command}` (resumable)")  # fmt: skip
    info = json.loads((directory / INFO).read_text())
    if info["profile"] != profile.name:
        raise ValueError(f"{directory} was built for profile {info['profile']}: `{command}`")
    if vae_dir is not None:
        from xr2ct_lib.models.vae import load_vae

        if state_sha256(load_vae(vae_dir).state_dict()) != info["vae_sha256"]:
            raise ValueError(f"{directory} holds latents of another VAE than {vae_dir}: "
                             f"`{command}`")  # fmt: skip
    zs, drrs, ys, recs = [], [], [], []
    for k in range(info["shards"]):
        path = directory / f"shard-{k:05d}.safetensors"
        t = load_file(str(path))
        with safe_open(str(path), "np") as f:
            recs.append(pd.read_json(StringIO(f.metadata()["records"]), orient="records"))
        zs.append(t["z"])
        drrs.append(t["drr"])
        ys.append(t["label"])
    seeds = np.concatenate([r["phantom_seed"].to_numpy() for r in recs])
    pt.check_disjoint(NAME, seeds, cohort_seeds)
    return Collection(np.concatenate(zs), np.concatenate(drrs),
                      np.concatenate(ys), pd.concat(recs, ignore_index=True), info)  # fmt: skip


@torch.no_grad()
def collection_data(collection: Collection, encoder, normalizer, halves: str, batch: int = 64):
    """The collection as diffusion samples
    (:class:`~xr2ct_lib.train.latent_data.LatentPairDataset`): normalised latents in the
    ``halves`` layout, the DRR embeddings of ``encoder``, the PE labels; no X-ray embeddings
    (RSPECT has no X-rays)."""
    from xr2ct_lib.models import halves as H
    from xr2ct_lib.train.latent_data import LatentPairDataset

    z = torch.from_numpy(normalizer.normalize(collection.z.astype(np.float32)))
    drr = torch.cat([encoder.embed(collection.drr_images(slice(i, i + batch))).float()
                     for i in range(0, len(collection), batch)]).numpy()  # fmt: skip
    return LatentPairDataset(
        H.to_diffusion(z, halves),
        None,
        torch.from_numpy(H.repeat_per_sample(drr, halves)),
        torch.from_numpy(H.repeat_per_sample(collection.labels, halves)),
    )
