"""What every pretrained reader is: one interface, one class per reader.

A reader (the clot reader that reads CTs, the X-ray reader, the latent classifier) is
pretrained on extra simulated patients whose seeds the cohort never uses
(:mod:`xr2ct_lib.train.pretrained`) and shipped in ``weights/<profile>-<folder>`` as
safetensors + ``config.json`` with its ``pretraining`` record, and beside it ``heldout.json``,
its benchmark on fresh patients. :class:`PretrainedReader` says where a reader lives
(:meth:`~PretrainedReader.directory`), loads the shipped one after checking that it may read
this cohort (:meth:`~PretrainedReader.shipped`, :meth:`~PretrainedReader.load`), names it in
one line (:meth:`~PretrainedReader.describe`), reads its fresh-patient record
(:meth:`~PretrainedReader.heldout_record`, :meth:`~PretrainedReader.heldout_line`) and
pretrains it (:meth:`~PretrainedReader.pretrain`).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from xr2ct_lib.config import WEIGHTS_DIR, Profile
from xr2ct_lib.train import pretrained as pt


class PretrainedReader:
    """The interface of a pretrained reader; a subclass fills in what differs.

    ``name``: its registry key (``clot``, ``cxr``, ``latent``); ``folder``: its weights
    folder under ``weights/<profile>-``; ``inputs``: what it reads ("CTs", "X-rays",
    "latents"); ``command``: the command that pretrains it ("{}": the profile);
    ``benchmark``: what records its fresh-patient result; ``score``: that result's name;
    ``then``: a sentence after the result; ``shipped_sizes``: the shipped reader's
    (patients, epochs) per profile; ``from_scratch``: what reads instead when there is none.
    """

    name: str = ""
    folder: str = ""
    inputs: str = ""
    command: str = ""
    benchmark: str = ""
    score: str = "AUC"
    then: str = ""
    shipped_sizes: dict = {}
    from_scratch: str = ""

    def directory(self, profile_name: str) -> Path:
        """Where a profile's shipped reader lives: ``weights/<profile>-<folder>``."""
        return WEIGHTS_DIR / f"{profile_name}-{self.folder}"

    def input_size(self, profile: Profile) -> tuple:
        """The size of what the reader reads under ``profile``."""
        raise NotImplementedError

    def load(self, directory: str | Path, profile: Profile, cohort_seeds=()) -> nn.Module:
        """The reader in ``directory``; raises if it was pretrained for another profile or
        input size, or on any patient whose phantom seed is in ``cohort_seeds``."""
        pre = pt.check_pretraining(directory, profile, self.input_size(profile), self.inputs,
                                   cohort_seeds, self.command.format(profile.name))  # fmt: skip
        return pt.load_reader(directory, pre)

    def shipped(self, run, cohort_seeds=()) -> nn.Module | None:
        """The profile's shipped reader, checked by :meth:`load`; None when the profile has
        none. ``run``: the run's :class:`~xr2ct_lib.config.RunConfig` or its profile."""
        profile = getattr(run, "profile", run)
        d = self.directory(profile.name)
        return self.load(d, profile, cohort_seeds) if (d / "config.json").is_file() else None

    def describe(self, model: nn.Module | None) -> str:
        """One line for tables and figures: which network read the inputs."""
        if model is None:
            return self.from_scratch
        return self.describe_pretrained(model.pretraining)

    def describe_pretrained(self, pre: dict) -> str:
        """:meth:`describe` of a pretrained reader, from its ``pretraining`` record."""
        raise NotImplementedError

    def heldout_record(self, profile_name: str) -> dict | None:
        """The shipped reader's recorded result on fresh patients (None when not recorded)."""
        return pt.load_heldout(self.directory(profile_name))

    def heldout_line(self, rec: dict) -> str:
        """One Markdown sentence: the recorded result overall and by clot-burden class."""
        return pt.heldout_line(rec, self.benchmark, score=self.score, then=self.then)

    def pretrain(self, profile: Profile, *args, **kwargs) -> tuple[nn.Module, dict]:
        """Pretrain the reader; returns it and its ``pretraining`` record."""
        raise NotImplementedError

    def save(self, model: nn.Module, out: str | Path, record: dict) -> Path:
        """Write the reader with its record (:func:`~xr2ct_lib.train.pretrained.save_reader`)."""
        return pt.save_reader(model, out, record)
