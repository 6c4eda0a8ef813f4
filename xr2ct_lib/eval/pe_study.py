"""Chapter 8's study: the PE classifiers of Tables 1 and 7 on one cohort, step by step.

:class:`PEStudy` holds the cohort (volumes at the generator's and at the clot reader's size,
latents, X-rays, the simulation's records) and the cross-validated results as they are made,
one method per step of the chapter, in the chapter's order: the clot reader, the latent
DenseNet, the X-ray reader and what its outputs read, the generated CTPA, sign transfer,
Table 7, Table 1 beside the ceilings, Table 1 on fresh patients, DeLong, per fold, the signal
budget, AUC by clot burden. What a cohort cannot have (clot masks, simulated records,
generated volumes, a recorded benchmark) is decided here: the step returns a
:class:`~xr2ct_lib.utils.Skipped` that the notebook shows as one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xr2ct_lib.config import RunConfig
from xr2ct_lib.data.cohort import PreparedCohort, load_records
from xr2ct_lib.eval import classifier_cv as ccv
from xr2ct_lib.eval import crossval as cv
from xr2ct_lib.eval.crossval import CVResult
from xr2ct_lib.eval.generated import GeneratedRows, generated_rows, load_generated
from xr2ct_lib.run.latents import load_latents, load_normalizer
from xr2ct_lib.train.readers import READERS
from xr2ct_lib.utils import Skipped

CLOT = "CTPA only (clot reader)"
NO_CLOTS = Skipped("no patient of this cohort has a clot mask (`clot_path`), so there is "
                   "nothing to supervise the clot reader with")  # fmt: skip


@dataclass
class PEStudy:
    """The cohort of ``cfg`` and the classifiers' results (``results``: Table 1's rows)."""

    cfg: RunConfig
    cohort: PreparedCohort
    z: np.ndarray
    records: pd.DataFrame
    has_clots: bool
    simulated: bool
    results: dict[str, CVResult] = field(default_factory=dict)
    nets: dict[str, str] = field(default_factory=dict)
    readers: dict[str, object] = field(default_factory=dict)
    latent: CVResult | None = None
    generated: GeneratedRows | None = None
    generated_latent: GeneratedRows | None = None

    @classmethod
    def load(cls, cfg: RunConfig) -> PEStudy:
        """The prepared cohort of ``cfg`` with its normalised latents and records."""
        cohort = PreparedCohort(cfg.run_dir)
        _, z = load_latents(cfg, cohort.ids, normalized=True)  # in the order of the labels
        simulated = bool((cohort.index["source"] == "phantom").any())
        return cls(cfg, cohort, z, load_records(cfg.run_dir), bool(cohort.stack("clot").any()),
                   simulated)  # fmt: skip

    # ------------------------------------------------------------------------- the cohort
    @property
    def ids(self) -> list[str]:
        return self.cohort.ids

    @property
    def seeds(self):
        """The cohort's phantom seeds: a pretrained reader must not have seen them."""
        r = self.records
        return r["phantom_seed"].dropna() if "phantom_seed" in r else ()

    @property
    def data(self) -> str:
        return "simulated cohort" if self.simulated else f"cohort of {self.cfg.manifest.name}"

    def describe(self) -> str:
        """One line: patients, PE share, the test folds the profile evaluates."""
        labels = self.cohort.labels
        return (f"{len(self.ids)} patients, {labels.mean():.0%} PE; test folds "
                f"{self.cfg.profile.cv_test_folds}")  # fmt: skip

    def networks(self, *extra: str) -> str:
        """The networks of Table 1's rows (and ``extra``), for the provenance lines."""
        return "; ".join([*self.nets.values(), *extra])

    # ------------------------------------------------------------------------ the readers
    def clot_reader(self) -> str | Skipped:
        """Table 1's CTPA row: the clot reader on every test fold (the shipped pretrained
        reader as it is, or a segmenter per fold); its networks' line."""
        c = self.cohort
        self.ct = c.stack("ct")  # the generator's size
        self.ct_r, self.clots_r = c.reader_volumes(self.cfg.profile)  # the reader's size
        reader = READERS["clot"].shipped(self.cfg, self.seeds) if self.has_clots else None
        self.readers["clot"] = reader
        print(f"CT read by the clot reader: {self.ct_r.shape[1:]}; by the generator: "
              f"{self.ct.shape[1:]}")  # fmt: skip
        if not self.has_clots:
            return NO_CLOTS
        self.nets["clot"] = READERS["clot"].describe(reader)
        self.results[CLOT] = ccv.cv_clot_classifier(
            self.cfg, self.ct_r, self.clots_r, c.labels, c.folds, c.ids, init=reader,
            epochs=0 if reader is not None else None)  # fmt: skip
        return self.nets["clot"]

    def latent_densenet(self) -> str:
        """The latent DenseNet on every test fold (fine-tuned from the pretrained one when it
        reads this run's latents); Table 1's CTPA row when there are no clot masks."""
        c = self.cohort
        init = READERS["latent"].shipped(self.cfg, self.seeds)
        self.nets["latent"] = READERS["latent"].describe(init)
        self.latent = ccv.cv_latent_classifier(self.cfg, self.z, c.labels, c.folds, c.ids,
                                               init=init)  # fmt: skip
        if not self.has_clots:
            self.results["CTPA only (latent DenseNet)"] = self.latent
        return self.nets["latent"]

    def xray_reader(self) -> str:
        """Table 1's X-ray row: the pretrained X-ray reader (simulated cohorts) or a CNN per
        fold."""
        c = self.cohort
        self.cxr = c.stack("cxr")
        reader = READERS["cxr"].shipped(self.cfg, self.seeds) if self.simulated else None
        self.readers["cxr"] = reader
        self.nets["cxr"] = READERS["cxr"].describe(reader)
        self.results["CXR only (CNN)"] = ccv.cv_cxr_classifier(
            self.cfg, self.cxr, c.labels, c.folds, c.ids, reader=reader)  # fmt: skip
        return self.nets["cxr"]

    def xray_outputs(self) -> pd.DataFrame | Skipped:
        """AUC of each output of the X-ray reader against the simulation's ground truth."""
        from xr2ct_lib.train.readers.cxr import outputs_table

        reader = self.readers.get("cxr")
        if reader is None or self.records.empty:
            return Skipped("the X-ray reader's outputs need a shipped X-ray reader and the "
                           "simulation's records")  # fmt: skip
        self.fresh_xray = READERS["cxr"].heldout_record(self.cfg.profile.name)
        return outputs_table(reader, self.cxr, self.records.reindex(self.ids), self.fresh_xray)

    def xray_outputs_reading(self, outputs: pd.DataFrame | Skipped) -> str:
        """What the X-ray reader's outputs read, and its recorded fresh-patient result."""
        from xr2ct_lib.train.readers.cxr import outputs_reading

        if isinstance(outputs, Skipped):
            return ""
        fresh = self.fresh_xray
        line = f"\n\n{READERS['cxr'].heldout_line(fresh)}" if fresh is not None else ""
        return outputs_reading(outputs) + line

    # --------------------------------------------------------------------- generated CTPA
    def generated_ctpa(self) -> str:
        """Table 1's generated row (read by the clot reader, or the latent DenseNet without
        one) and Table 7's generated latent row; one Markdown line on what was read."""
        y_by_id = dict(zip(self.ids, self.cohort.labels, strict=True))
        self.generated_latent = generated_rows(
            self.cfg, y_by_id, self.latent, "Generated CTPA (latent DenseNet)",
            reader="latent_classifier")  # fmt: skip
        self.generated = (
            generated_rows(self.cfg, y_by_id, self.results[CLOT], "Generated CTPA")
            if self.has_clots else self.generated_latent
        )  # fmt: skip
        if self.generated.result is not None:
            self.results[self.generated.name] = self.generated.result
        return f"**Generated CTPA:** {self.generated.note}."

    def sign_transfer(self) -> pd.DataFrame | Skipped:
        """X-ray-visible PE signs measured on the real and the generated CTPA."""
        from xr2ct_lib.eval.sign_measures import has_signs, sign_transfer

        if self.generated.result is None or not has_signs(self.records):
            return Skipped("sign transfer needs chapter 5's generated volumes and the signs "
                           "measured in the cohort records")  # fmt: skip
        norm = load_normalizer(self.cfg)  # the generated latents, normalised as self.z is
        gen_z = {p: norm.normalize(v["z"]).astype(np.float32)
                 for p, v in load_generated(self.cfg).items()}  # fmt: skip
        c = self.cohort
        return sign_transfer(self.z, self.records, c.labels, c.folds, gen_z, self.ids)

    # ----------------------------------------------------------------------------- tables
    def table7(self) -> pd.DataFrame:
        """Table 7: the CTPA classifiers on the original and the generated CTPA."""
        rows = {}
        size = lambda v: "×".join(map(str, v.shape[1:]))  # noqa: E731
        if self.has_clots:
            rows[f"Clot reader, real CT at {size(self.ct_r)}"] = self.results[CLOT]
        if self.has_clots and self.ct_r.shape[1:] != self.ct.shape[1:]:
            c = self.cohort  # the same fold readers on the generator's coarser CT, resized
            rows[f"Clot reader, real CT at the generator's {size(self.ct)}"] = (
                ccv.cv_saved_clot_classifier(self.cfg, self.ct, c.labels, c.folds, c.ids)
            )
        rows["Latent DenseNet (VAE latents, labels only)"] = self.latent
        if self.generated.result is not None and self.has_clots:
            rows["Generated CTPA, clot reader"] = self.generated.result
        if self.generated_latent.result is not None:
            rows["Generated CTPA, latent DenseNet"] = self.generated_latent.result
        return cv.results_table(rows)

    def table1(self) -> pd.DataFrame:
        """Table 1 (results saved under ``<run_dir>/cv`` for chapters 9 and 12)."""
        cv.save_results({**self.results, "Latent DenseNet": self.latent},
                        self.cfg.run_dir / "cv")  # fmt: skip
        self.table1_ = cv.results_table(self.results)
        return self.table1_

    def beside_ceilings(self) -> pd.DataFrame | Skipped:
        """Table 1 beside the ceilings of the simulation on the same patients."""
        from xr2ct_lib.eval.ceilings import beside_table1

        tested = next(iter(self.results.values())).pooled().patient_id  # the CTPA row's
        self.beside = beside_table1(self.table1_, self.records.reindex(tested).dropna(how="all"))
        if self.records.empty:
            return Skipped("this cohort has no simulated patients, whose records the "
                           "ceilings are computed from")  # fmt: skip
        return self.beside

    def fresh_table(self) -> pd.DataFrame | Skipped:
        """Table 1 on fresh simulated patients, as recorded for these weights."""
        from xr2ct_lib.eval.fresh import load_record, record_table
        from xr2ct_lib.run.networks import networks_for

        cfg = self.cfg
        self.fresh = load_record(networks_for(cfg).bundle) if cfg.weights == "shipped" else None
        if self.fresh is None:
            return Skipped("no fresh-patient benchmark is recorded for these weights: `python "
                           f"benchmarks/table1_fresh.py --profile {cfg.profile.name} "
                           "--record`")  # fmt: skip
        return record_table(self.fresh)

    def fresh_labels(self) -> dict:
        """The caption and networks of :meth:`fresh_table` (for ``save_table``)."""
        rec = self.fresh
        if rec is None:
            return {"caption": ""}
        return {
            "caption": f"Table 1 on {rec['patients']} fresh simulated patients "
            f"({rec['pe_patients']} with PE): DeLong 95 % CIs, each row against the X-ray "
            f"reader",
            "networks": f"{rec['bundle']}; " + "; ".join(rec["networks"].values()),
        }

    def fresh_reading(self) -> str:
        """What the fresh-patient benchmark says (empty without one)."""
        from xr2ct_lib.eval.fresh import reading

        return reading(self.fresh) if self.fresh is not None else ""

    def sign_reading(self, table: pd.DataFrame | Skipped) -> str:
        """What :meth:`sign_transfer` shows (empty when skipped)."""
        from xr2ct_lib.eval.sign_measures import reading

        return "" if isinstance(table, Skipped) else reading(table)

    def signal_budget(self) -> pd.DataFrame | Skipped:
        """The signal the classifiers can find (the clot masks)."""
        from xr2ct_lib.eval.signal import signal_budget

        if not self.has_clots:
            return Skipped("the signal budget measures the clot masks, and this cohort has none")
        return signal_budget(self.cfg, self.cohort)

    def auc_by_burden(self) -> pd.DataFrame | Skipped:
        """The clot reader's AUC by clot-burden class."""
        from xr2ct_lib.eval.signal import auc_by_burden

        if not self.has_clots or "burden" not in self.records.columns:
            return Skipped("AUC by burden needs clot masks and the simulation's burden classes")
        return auc_by_burden(self.results[CLOT], self.records, self.ct_r, self.clots_r, self.ids)

    def clot_heldout_line(self) -> str:
        """The shipped clot reader's recorded result on fresh patients (empty without one)."""
        if self.readers.get("clot") is None:
            return ""
        fresh = READERS["clot"].heldout_record(self.cfg.profile.name)
        return READERS["clot"].heldout_line(fresh) if fresh is not None else ""

    # ---------------------------------------------------------------------------- summary
    def summary(self, delong: pd.DataFrame) -> str:
        """The chapter's summary, from its own numbers."""
        n = len(self.ids)
        caveat = (
            "- These are simulated patients: the numbers show the pipeline, not clinical "
            "performance." if self.simulated else
            f"- These numbers are from the {self.data}, with networks trained in this run "
            f"folder ({n} patients): read them with their confidence intervals."
        )  # fmt: skip
        return (
            cv.reading(self.results, self.beside, delong, data=self.data) + "\n\n"
            "- The evaluation follows the paper: stratified six folds, validation-fold Youden "
            "thresholds, mean fold AUC ± SD and pooled AUC with DeLong CIs.\n" + caveat
        )
