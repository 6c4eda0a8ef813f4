"""The pretrained clot reader: the book's analogue of INSPECT's RSPECT pretraining.

The paper's CTPA reader starts from an encoder pretrained on thousands of annotated CTPA
(RSPECT). A cohort of 120 patients cannot teach a segmenter what a lobar filling defect
looks like at 3 mm voxels; the simulator can make more patients. :func:`pretrain_clot_reader`
simulates CT-only patients in memory (:func:`~xr2ct_lib.data.phantom.simulate_ct_batch`)
from seeds the cohort never uses (the cohort's are below 2³¹, these start at 2³¹), trains a
:class:`~xr2ct_lib.models.classifiers.ClotSegmenter` on their clot masks, and writes it with
its provenance (safetensors + JSON). It reads the CT at the profile's
:attr:`~xr2ct_lib.config.Profile.reader_size`, finer than the generator's ``ct_size``, as
INSPECT reads every original slice of a CTPA (the paper's Table 7). Chapter 8 reads every
fold with it as it is (it saw no cohort patient);
:func:`~xr2ct_lib.eval.classifier_cv.cv_clot_classifier` can also fine-tune it per fold. The
pretraining patients come from the same simulator as the cohort: an in-domain pretraining
that real data rarely gets, which the book says where it is used.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from xr2ct_lib.config import WEIGHTS_DIR, Profile
from xr2ct_lib.files import atomic_write_text, sha256_file
from xr2ct_lib.models.bundle import show
from xr2ct_lib.models.classifiers import ClotSegmenter, load_classifier, save_classifier

FIRST_SEED = 2**31  # the cohort's phantom seeds are drawn below 2**31 - 1
FEATURES = (16, 16, 32, 32, 32, 16)  # twice the per-fold segmenter's width: more patients
# (patients, epochs) of the shipped readers, `make clot-reader PROFILE=...`
SHIPPED = {"smoke": (240, 10), "workshop": (1440, 12)}
CHUNK = 60  # patients simulated at a time (memory: the clot masks of casts are kept)
HELDOUT = "heldout.json"  # the benchmark's result on fresh patients, beside the weights


def reader_dir(profile_name: str) -> Path:
    """Where the shipped clot reader of a profile lives: ``weights/<profile>-clot-reader``."""
    return WEIGHTS_DIR / f"{profile_name}-clot-reader"


def check_sizes(patients: int, epochs: int) -> None:
    """Raise (before any simulation) unless there are ≥ 2 patients and ≥ 1 epoch."""
    if patients < 2 or epochs < 1:
        raise ValueError(f"give ≥ 2 patients and ≥ 1 epoch, got {patients} and {epochs}")


def pretrain_clot_reader(
    profile: Profile,
    patients: int,
    epochs: int,
    seed: int = 0,
    pe_share: float = 0.5,
    context: int = 2,
) -> tuple[ClotSegmenter, dict]:
    """Simulate ``patients`` CT-only patients (a share ``pe_share`` with PE) and fit a clot
    segmenter on all their clot masks; returns the model and its provenance."""
    from xr2ct_lib.data.phantom import simulate_ct_batch
    from xr2ct_lib.train.clot import fit_clot_segmenter
    from xr2ct_lib.utils import progress

    check_sizes(patients, epochs)
    t0 = time.time()
    rng = np.random.default_rng(seed)
    labels = (rng.random(patients) < pe_share).astype(int)
    labels[:2] = (1, 0)  # both classes, whatever the draw
    seeds = FIRST_SEED + seed * 10**6 + np.arange(patients)
    cts, clots = [], []
    for i in progress(range(0, patients, CHUNK), desc="simulating CT-only patients", unit="chunk"):
        part = slice(i, i + CHUNK)
        b = simulate_ct_batch(seeds[part].tolist(), labels[part].tolist(), profile,
                              size=profile.reader_size)  # fmt: skip
        cts.append(b.ct)
        clots.append(b.clot)
    ct, clot = np.concatenate(cts), np.concatenate(clots)
    t_sim = time.time() - t0
    model = fit_clot_segmenter(profile, ct, clot, np.arange(patients), epochs, seed,
                               desc="pretraining the clot reader", features=FEATURES,
                               context=context, cosine=True)  # fmt: skip
    provenance = {
        "profile": profile.name,
        "ct_size": list(profile.reader_size),
        "patients": int(patients),
        "pe_patients": int(labels.sum()),
        "seeds": [int(seeds[0]), int(seeds[-1])],
        "epochs": int(epochs),
        "lr_schedule": "cosine",
        "seed": int(seed),
        "simulate_s": round(t_sim, 1),
        "train_s": round(time.time() - t0 - t_sim, 1),
    }
    return model, provenance


def save_clot_reader(model: ClotSegmenter, out: str | Path, provenance: dict) -> Path:
    """Write the reader (safetensors + config.json with its ``pretraining`` record); a
    fresh-patient record of the weights it replaces (:func:`save_heldout`) is removed."""
    path = save_classifier(model, out, pretraining=provenance)
    (Path(out) / HELDOUT).unlink(missing_ok=True)
    return path


def load_clot_reader(directory: str | Path, profile: Profile, cohort_seeds=()) -> ClotSegmenter:
    """The pretrained reader in ``directory``; raises if it was pretrained for another
    profile or CT size (:attr:`~xr2ct_lib.config.Profile.reader_size`), or on any patient
    whose phantom seed is in ``cohort_seeds``."""
    directory = Path(directory)
    cfg = json.loads((directory / "config.json").read_text())
    pre = cfg.get("pretraining")
    if pre is None:
        raise ValueError(f"{directory}: no pretraining record, not a clot reader")
    if pre["profile"] != profile.name:
        raise ValueError(
            f"{directory} was pretrained for profile {pre['profile']}, this run is "
            f"{profile.name}: `xr2ct pretrain-clot-reader --profile {profile.name}`"
        )
    size = tuple(pre.get("ct_size", profile.ct_size))
    if size != profile.reader_size:
        raise ValueError(
            f"{directory} reads CTs of {size}, profile {profile.name}'s reader reads "
            f"{profile.reader_size}: `xr2ct pretrain-clot-reader --profile {profile.name}`"
        )
    lo, hi = pre["seeds"]
    seen = sorted(int(s) for s in cohort_seeds if lo <= int(s) <= hi)
    if seen:
        raise ValueError(
            f"{directory} was pretrained on phantom seeds {lo}–{hi}, which include cohort "
            f"patients' seeds {seen[:5]}: it cannot read this cohort"
        )
    model = load_classifier(directory)
    model.pretraining = {**pre, "source": show(directory)}  # for :func:`describe`
    return model


def shipped_clot_reader(profile: Profile, cohort_seeds=()) -> ClotSegmenter | None:
    """The profile's shipped reader (:func:`reader_dir`), checked by :func:`load_clot_reader`;
    None when the profile has none (chapter 8 then trains a segmenter per fold from scratch)."""
    d = reader_dir(profile.name)
    return load_clot_reader(d, profile, cohort_seeds) if (d / "config.json").is_file() else None


def describe(reader: ClotSegmenter | None) -> str:
    """One line for tables and figures: which clot reader read the CTs (a reader loaded by
    :func:`load_clot_reader`, or None for per-fold segmenters)."""
    if reader is None:
        return "clot segmenters trained here per fold from scratch"
    pre = reader.pretraining
    return (f"clot reader pretrained on {pre['patients']} extra simulated CT-only patients "
            f"({pre['source']})")  # fmt: skip


def _weights_sha256(directory: str | Path) -> str:
    return sha256_file(Path(directory) / "model.safetensors")


def save_heldout(directory: str | Path, result: dict) -> Path:
    """Record ``result`` (``benchmarks/clot_reader_heldout.py --record``: the reader's AUC on
    fresh simulated patients) in ``directory/heldout.json``, tied to the weights' sha256."""
    rec = {**result, "weights_sha256": _weights_sha256(directory)}
    return atomic_write_text(Path(directory) / HELDOUT, json.dumps(rec, indent=2) + "\n")


def load_heldout(directory: str | Path) -> dict | None:
    """The fresh-patient result recorded for the reader in ``directory``, or None when there is
    none; raises when it was recorded for other weights (rerun the benchmark with
    ``--record``)."""
    path = Path(directory) / HELDOUT
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec.get("weights_sha256") != _weights_sha256(directory):
        raise ValueError(f"{path} was recorded for other weights than {directory}'s: "
                         f"`python benchmarks/clot_reader_heldout.py --record`")  # fmt: skip
    return rec


def heldout_line(rec: dict) -> str:
    """One Markdown sentence: the reader's recorded AUC on fresh simulated patients, overall
    and by clot-burden class (:func:`load_heldout`)."""
    by = "; ".join(f"{c} {v['auc']:.2f} ({v['patients']} patients)"
                   for c, v in rec["by_burden"].items())  # fmt: skip
    return (f"**The same reader on {rec['patients']} fresh simulated patients** (seeds neither "
            f"the cohort nor its pretraining used; `benchmarks/clot_reader_heldout.py`, recorded "
            f"with its weights): AUC {rec['auc']:.2f}; against the patients without PE, {by}. "
            f"The cohort's rows above are a draw of a few patients per class from the same "
            f"simulation.")  # fmt: skip
