"""What every set of extra simulated patients shares: the seeds of its patients (blocks no
other set and no cohort uses), the pretraining record and the checks before a reader reads a
cohort, and the fresh-patient record kept beside a reader's weights.

The readers (:mod:`xr2ct_lib.train.readers`: the clot reader, the X-ray reader, the latent
classifier) are each pretrained on extra patients that the simulator makes in memory from
seeds the cohort never uses, and shipped in ``weights/<profile>-<kind>-reader`` as
safetensors + config.json with a ``pretraining`` record.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch import nn

from xr2ct_lib.config import Profile
from xr2ct_lib.files import atomic_write_text, sha256_file
from xr2ct_lib.models.bundle import show
from xr2ct_lib.models.classifiers import load_classifier, save_classifier

FIRST_SEED = 2**31  # the cohort's phantom seeds are drawn below 2**31 - 1
HELDOUT = "heldout.json"  # a benchmark's result on fresh patients, beside the weights
BLOCK = 10**6  # phantom seeds per block; block b holds FIRST_SEED + b·BLOCK + i

# Which blocks each set of extra simulated patients owns: [first, last) block, the block of a
# set made with seed s being first + s. Disjoint by construction; :func:`check_disjoint`
# checks a set's seeds against the cohort's and against every other set's blocks.
SEED_BLOCKS: dict[str, tuple[int, int]] = {
    "clot_reader": (0, 500),
    "cxr_reader": (500, 700),
    "ctpa_collection": (700, 900),  # the book's RSPECT (:mod:`.collection`)
    "fresh_benchmark": (900, 998),  # Table 1's fresh-patient benchmark
    "cxr_reader_heldout": (998, 999),
    "clot_reader_heldout": (999, 1000),
}


def seed_block(name: str, seed: int, patients: int) -> np.ndarray:
    """The phantom seeds of ``patients`` patients of the set ``name`` made with ``seed``:
    block ``SEED_BLOCKS[name][0] + seed``; raises when that block is not the set's own or
    ``patients`` overflow it."""
    first, end = SEED_BLOCKS[name]
    if not 0 <= int(seed) < end - first or not 0 < int(patients) <= BLOCK:
        raise ValueError(f"{name}: seed {seed} and {patients} patients leave its seed blocks "
                         f"{first}–{end - 1} (at most {end - first - 1} and {BLOCK})")  # fmt: skip
    return pretraining_seeds(seed, patients, first)


def check_disjoint(name: str, seeds, cohort_seeds=()) -> None:
    """Raise unless every seed of the set ``name`` lies in its own blocks, above the cohort's,
    and none is a cohort patient's (``cohort_seeds``)."""
    seeds = np.asarray(seeds, dtype=np.int64)
    first, end = SEED_BLOCKS[name]
    block = (seeds - FIRST_SEED) // BLOCK
    stray = seeds[(seeds < FIRST_SEED) | (block < first) | (block >= end)]
    if len(stray):
        owner = [
            k for k, (a, b) in SEED_BLOCKS.items() if a <= (int(stray[0]) - FIRST_SEED) // BLOCK < b
        ]
        raise ValueError(f"{name}: phantom seed {int(stray[0])} is outside its blocks {first}–"
                         f"{end - 1}{f' (it is {owner[0]}’s)' if owner else ''}")  # fmt: skip
    seen = sorted(set(int(s) for s in cohort_seeds) & set(seeds.tolist()))
    if seen:
        raise ValueError(f"{name}: phantom seeds {seen[:5]} are cohort patients'")


def check_sizes(patients: int, epochs: int) -> None:
    """Raise (before any simulation) unless there are ≥ 2 patients and ≥ 1 epoch."""
    if patients < 2 or epochs < 1:
        raise ValueError(f"give ≥ 2 patients and ≥ 1 epoch, got {patients} and {epochs}")


def pretraining_seeds(seed: int, patients: int, slot: int = 0) -> np.ndarray:
    """Phantom seeds ``FIRST_SEED + (slot + seed)·10⁶ + i``: a block of a million per
    (reader, seed), all above the cohort's."""
    return FIRST_SEED + (int(slot) + int(seed)) * 10**6 + np.arange(int(patients))


def pretraining_labels(seed: int, patients: int, pe_share: float = 0.5) -> np.ndarray:
    """PE labels of the pretraining patients: a share ``pe_share``, both classes always."""
    labels = (np.random.default_rng(seed).random(patients) < pe_share).astype(int)
    labels[:2] = (1, 0)
    return labels


def pretraining_record(
    profile: Profile,
    labels: np.ndarray,
    seeds: np.ndarray,
    epochs: int,
    seed: int,
    seconds: tuple[float, float],
    **extra,
) -> dict:
    """A reader's ``pretraining`` record: its profile, patients and their seeds, epochs,
    ``seconds`` (simulating, training), and ``extra`` (input size, schedule, ...)."""
    return {
        "profile": profile.name, **extra,
        "patients": int(len(labels)), "pe_patients": int(np.sum(labels)),
        "seeds": [int(seeds[0]), int(seeds[-1])], "epochs": int(epochs), "seed": int(seed),
        "simulate_s": round(seconds[0], 1), "train_s": round(seconds[1], 1),
    }  # fmt: skip


def check_pretraining(
    directory: str | Path, profile: Profile, size, inputs: str, cohort_seeds, command: str
) -> dict:
    """The ``pretraining`` record of the reader in ``directory``; raises if there is none, if
    it was pretrained for another profile or for ``inputs`` (e.g. "CTs") of another ``size``,
    or on any patient whose phantom seed is in ``cohort_seeds``. ``command`` is the one that
    makes the right reader."""
    directory = Path(directory)
    pre = json.loads((directory / "config.json").read_text()).get("pretraining")
    if pre is None:
        raise ValueError(f"{directory}: no pretraining record, not a pretrained reader")
    if pre["profile"] != profile.name:
        raise ValueError(f"{directory} was pretrained for profile {pre['profile']}, this run is "
                         f"{profile.name}: `{command}`")  # fmt: skip
    got = pre.get("input_size", pre.get("ct_size"))
    if got is not None and tuple(got) != tuple(size):
        raise ValueError(f"{directory} reads {inputs} of {tuple(got)}, profile {profile.name}'s "
                         f"reader reads {tuple(size)}: `{command}`")  # fmt: skip
    lo, hi = pre["seeds"]
    seen = sorted(int(s) for s in cohort_seeds if lo <= int(s) <= hi)
    if seen:
        raise ValueError(
            f"{directory} was pretrained on phantom seeds {lo}–{hi}, which include cohort "
            f"patients' seeds {seen[:5]}: it cannot read this cohort"
        )
    return pre


def load_reader(directory: str | Path, pre: dict) -> nn.Module:
    """The classifier in ``directory`` with ``model.pretraining`` (its record and source)."""
    model = load_classifier(directory)
    model.pretraining = {**pre, "source": show(directory)}
    return model


def save_reader(model: nn.Module, out: str | Path, provenance: dict) -> Path:
    """Write a reader (safetensors + config.json with its ``pretraining`` record); a
    fresh-patient record of the weights it replaces (:func:`save_heldout`) is removed."""
    path = save_classifier(model, out, pretraining=provenance)
    (Path(out) / HELDOUT).unlink(missing_ok=True)
    return path


def _weights_sha256(directory: str | Path) -> str:
    return sha256_file(Path(directory) / "model.safetensors")


def save_heldout(directory: str | Path, result: dict) -> Path:
    """Record ``result`` (a reader's benchmark on fresh simulated patients) in
    ``directory/heldout.json``, tied to the weights' sha256."""
    rec = {**result, "weights_sha256": _weights_sha256(directory)}
    return atomic_write_text(Path(directory) / HELDOUT, json.dumps(rec, indent=2) + "\n")


def load_heldout(directory: str | Path) -> dict | None:
    """The fresh-patient result recorded for the reader in ``directory``, or None when there is
    none; raises when it was recorded for other weights (rerun its benchmark with
    ``--record``)."""
    path = Path(directory) / HELDOUT
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec.get("weights_sha256") != _weights_sha256(directory):
        again = rec.get("command", "its benchmark with --record")
        raise ValueError(f"{path} was recorded for other weights than {directory}'s: rerun "
                         f"`{again}`")  # fmt: skip
    return rec


def heldout_line(rec: dict, benchmark: str, score: str = "AUC", then: str = "") -> str:
    """One Markdown sentence: a reader's result on fresh simulated patients recorded by the
    script ``benchmark`` (:func:`load_heldout`): its ``score`` overall, then against the
    patients without PE by clot-burden class; ``then`` follows."""
    by = "; ".join(f"{c} {v['auc']:.2f} ({v['patients']} patients)"
                   for c, v in rec["by_burden"].items())  # fmt: skip
    return (f"**The same reader on {rec['patients']} fresh simulated patients** (seeds neither "
            f"the cohort nor its pretraining used; `{benchmark}`, recorded with its weights): "
            f"{score} {rec['auc']:.2f}; against the patients without PE, {by}.{then}")  # fmt: skip
