"""The pretrained clot reader: the book's analogue of INSPECT's RSPECT pretraining.

The paper's CTPA reader starts from an encoder pretrained on thousands of annotated CTPA
(RSPECT). A cohort of 120 patients cannot teach a segmenter what a lobar filling defect
looks like at 3 mm voxels; the simulator can make more patients. :meth:`ClotReader.pretrain`
simulates CT-only patients in memory (:func:`~xr2ct_lib.data.phantom.simulate_ct_batch`)
from seeds the cohort never uses (the cohort's are below 2³¹, these start at 2³¹), trains a
:class:`~xr2ct_lib.models.classifiers.ClotSegmenter` on their clot masks, and writes it with
its provenance (safetensors + JSON); :data:`READER` is the one instance. It reads the CT at
the profile's :attr:`~xr2ct_lib.config.Profile.reader_size`, finer than the generator's
``ct_size``, as INSPECT reads every original slice of a CTPA (the paper's Table 7). Chapter
8 reads every fold with it as it is (it saw no cohort patient);
:func:`~xr2ct_lib.eval.classifier_cv.cv_clot_classifier` can also fine-tune it per fold. The
pretraining patients come from the same simulator as the cohort: an in-domain pretraining
that real data rarely gets, which the book says where it is used.
"""

from __future__ import annotations

import time

import numpy as np

from xr2ct_lib.config import Profile
from xr2ct_lib.models.classifiers import ClotSegmenter
from xr2ct_lib.train import pretrained as pt
from xr2ct_lib.train.readers.base import PretrainedReader

FEATURES = (16, 16, 32, 32, 32, 16)  # twice the per-fold segmenter's width: more patients
CHUNK = 60  # patients simulated at a time (memory: the clot masks of casts are kept)


class ClotReader(PretrainedReader):
    """The clot reader: a :class:`~xr2ct_lib.models.classifiers.ClotSegmenter` that reads
    CTs at the profile's ``reader_size``."""

    name, folder, inputs = "clot", "clot-reader", "CTs"
    command = "xr2ct pretrain-clot-reader --profile {}"
    benchmark = "benchmarks/clot_reader_heldout.py"
    then = (" The cohort's rows above are a draw of a few patients per class from the same "
            "simulation.")  # fmt: skip
    shipped_sizes = {"smoke": (240, 10), "workshop": (1440, 12)}  # `make clot-reader`
    from_scratch = "clot segmenters trained here per fold from scratch"

    def input_size(self, profile: Profile) -> tuple:
        return tuple(profile.reader_size)

    def describe_pretrained(self, pre: dict) -> str:
        return (f"clot reader pretrained on {pre['patients']} extra simulated CT-only patients "
                f"({pre['source']})")  # fmt: skip

    def pretrain(self, profile: Profile, patients: int, epochs: int, seed: int = 0,
                 pe_share: float = 0.5, context: int = 2,
                 ) -> tuple[ClotSegmenter, dict]:  # fmt: skip
        """Simulate ``patients`` CT-only patients (a share ``pe_share`` with PE) and fit a
        clot segmenter on all their clot masks; returns the model and its provenance."""
        from xr2ct_lib.data.phantom import simulate_ct_batch
        from xr2ct_lib.train.clot import fit_clot_segmenter
        from xr2ct_lib.utils import progress

        pt.check_sizes(patients, epochs)
        t0 = time.time()
        labels = pt.pretraining_labels(seed, patients, pe_share)
        seeds = pt.pretraining_seeds(seed, patients)
        cts, clots = [], []
        chunks = range(0, patients, CHUNK)
        for i in progress(chunks, desc="simulating CT-only patients", unit="chunk"):
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
        provenance = pt.pretraining_record(
            profile, labels, seeds, epochs, seed, (t_sim, time.time() - t0 - t_sim),
            ct_size=list(profile.reader_size), lr_schedule="cosine",
        )  # fmt: skip
        return model, provenance


READER = ClotReader()
