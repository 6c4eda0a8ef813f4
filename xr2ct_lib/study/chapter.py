"""Chapter 12's steps: the kit a run's cases make, what a participant sees, and the analysis
of the kit read by two automated readers (chapter 8's classifiers), each one call.

What a run cannot give (generated volumes of both classes, chapter 8's predictions) is
decided here: the step returns a :class:`~xr2ct_lib.utils.Skipped` shown as one line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from xr2ct_lib.config import RunConfig
from xr2ct_lib.eval import stats
from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.models.bundle import show
from xr2ct_lib.study import automated as auto
from xr2ct_lib.study.cases import RunCases, gather_cases
from xr2ct_lib.study.kit import KitInfo, kit_from_run
from xr2ct_lib.study.preview import case_preview
from xr2ct_lib.study.score import PHASES, ReaderScores, read_key, score_responses
from xr2ct_lib.utils import Skipped

SCORE_COLUMNS = ["cases", "accuracy", "sensitivity", "specificity", "ppv", "npv", "tp", "fp",
                 "tn", "fn"]  # fmt: skip


def paper_table6() -> pd.DataFrame:
    """The paper's Table 6 (two radiologists, phase 2), quoted: ``eval/paper/table6.csv``."""
    from importlib import resources

    with resources.as_file(resources.files("xr2ct_lib.eval") / "paper" / "table6.csv") as f:
        return pd.read_csv(f, index_col=0)


@dataclass
class ReaderStudy:
    """A run's reader study: its cases, the kit built from them, the automated readings."""

    cfg: RunConfig
    run: RunCases
    kit: KitInfo | None = None
    key: pd.DataFrame | None = None
    build_s: float = 0.0
    scores: ReaderScores | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, cfg: RunConfig) -> ReaderStudy:
        return cls(cfg, gather_cases(cfg.run_dir))

    @property
    def counts(self) -> dict[str, int]:
        """Generated volumes by class."""
        ids = self.run.generated_ids
        pe = sum(self.run.labels[p] for p in ids)
        return {"PE": pe, "non-PE": len(ids) - pe}

    @property
    def n_per_class(self) -> int:
        return min(10, *self.counts.values())

    @property
    def n_realism(self) -> int:
        return min(10, len(self.run.generated_ids))

    def plan(self) -> str:
        """One Markdown line: the generated volumes there are and the cases the kit takes."""
        c, n = self.counts, self.n_per_class
        return (
            f"{len(self.run.generated_ids)} generated volumes in `{show(self.run.generated_dir)}` "
            f"({c['PE']} PE, {c['non-PE']} non-PE) of {len(self.run.labels)} prepared "
            f"patients: the kit takes **{n} PE + {n} non-PE** cases"
            + (" (the paper: 10 + 10)" if n < 10 else "")
            + f" and {self.n_realism} real + {self.n_realism} generated volumes."
        )

    def build_kit(self) -> pd.DataFrame | Skipped:
        """Build the kit into ``<run_dir>/reader_kit``; what it holds, or why there is none."""
        if self.n_per_class < 1:
            c = self.counts
            return Skipped(
                "the PE task needs at least one PE and one non-PE patient with a generated "
                f"CTPA, and this run has {c['PE']} and {c['non-PE']}. Run chapter 5 first"
            )
        t0 = time.perf_counter()
        self.kit = kit = kit_from_run(self.cfg.run_dir, self.cfg.run_dir / "reader_kit",
                                      seed=self.cfg.seed, n_per_class=self.n_per_class,
                                      n_realism=self.n_realism)  # fmt: skip
        self.build_s = time.perf_counter() - t0
        self.key = read_key(kit.key_path)
        self.notes = [f"**Note:** {note}." for note in kit.notes]
        return pd.Series({
            "kit folder": show(kit.path), "answer key (keep apart)": show(kit.key_path),
            "kit id": kit.kit_id, **{k: str(v) for k, v in kit.counts.items()},
            "index.html size": f"{kit.html_bytes / 1e6:.2f} MB",
            "build time": f"{self.build_s:.1f} s",
        }, name="reader kit").to_frame()  # fmt: skip

    def case_figure(self):
        """Phase 2 of the first PE-task case as the kit shows it."""
        if self.kit is None:
            return Skipped("there is no kit")
        pid = self.key.patient_id[self.key.task == "pe_ctpa"].iloc[0]
        return case_preview(self.run.cxr(pid), self.run.generated_ct(pid), "Phase 2 as the kit "
                            "shows it: X-ray and generated CTPA (middle slices)")  # fmt: skip

    def automated_table(self, reader: str = "automated readers") -> pd.DataFrame | Skipped:
        """Table 6 on the kit's cases read by chapter 8's classifiers (phase 1: the X-ray
        classifier; phase 2: the clot reader on the generated CTPA); their answers are written
        to ``reader_automated_responses.csv``."""
        cv_dir = self.cfg.run_dir / "cv"
        preds = {"pe_cxr": auto.cv_predictions(cv_dir, auto.CXR_CV),
                 "pe_ctpa": auto.cv_predictions(cv_dir, auto.GENERATED_CV)}  # fmt: skip
        if self.kit is None:
            return Skipped("there is no kit (see above), so there are no cases to read")
        if preds["pe_cxr"] is None:
            return Skipped(f"no X-ray classifier results in `{show(cv_dir)}`: run chapter 8")
        if preds["pe_ctpa"] is None:
            self.notes.append(
                f"**Phase 2 skipped:** `{show(cv_dir)}` has no generated-CTPA predictions "
                "(chapter 8 writes them only when chapter 5 ran before it). Phase 1 alone is "
                "shown.")  # fmt: skip
        responses, missing = auto.automated_responses(
            self.key, {t: p for t, p in preds.items() if p is not None}, reader
        )
        for task, codes in missing.items():
            if codes:
                self.notes.append(f"**Note:** {len(codes)} {PHASES[task]} case(s) have no "
                                  "cross-validated prediction and stay unanswered.")  # fmt: skip
        atomic_write_text(self.cfg.path("reader_automated_responses.csv"),
                          responses.to_csv(index=False))  # fmt: skip
        self.scores = score_responses(responses, self.key)
        self.notes += auto.constant_callers(auto.automated_table(self.scores.pe))
        return auto.automated_table(self.scores.pe[SCORE_COLUMNS])

    def take_notes(self) -> str:
        """The notes gathered since the last call, as Markdown (empty when none)."""
        notes, self.notes = self.notes, []
        return "\n\n".join(notes)

    def mcnemar(self) -> pd.DataFrame | Skipped:
        """Phase 1 against phase 2 on the same cases (exact McNemar)."""
        if self.scores is None:
            return Skipped("no automated readings")
        if self.scores.comparison.empty:
            return Skipped("no phase-2 answers, so no phase comparison")
        return self.scores.comparison

    def mcnemar_reading(self) -> str:
        """What the McNemar row says (empty without one)."""
        if self.scores is None or self.scores.comparison.empty:
            return ""
        c = self.scores.comparison.iloc[0]
        return (
            f"On these {c.cases:.0f} cases, accuracy goes from {c['accuracy phase 1']:.2f} (X-ray "
            f"classifier) to {c['accuracy phase 2']:.2f} (classifier reading the generated "
            f"CTPA); {c['right only in phase 2']:.0f} case(s) are right only in phase 2 and "
            f"{c['right only in phase 1']:.0f} only in phase 1, exact McNemar p = "
            f"{c['McNemar exact p']:.3f}."
        )

    def summary(self) -> str:
        """The chapter's summary, from the kit and the automated readings."""
        lines = []
        kit = self.kit
        if kit is not None:
            lines.append(f"- The kit `{kit.path.name}` holds {kit.counts['PE cases']} PE-task "
                         f"cases and {kit.counts['volumes (real-or-generated)']} volumes in "
                         f"{kit.html_bytes / 1e6:.1f} MB, built in {self.build_s:.1f} s; its key "
                         "lies beside it.")  # fmt: skip
        if self.scores is not None and not self.scores.pe.empty:
            for (_, phase), r in self.scores.pe.iterrows():
                lines.append(f"- Automated reader, {phase}: accuracy {r.accuracy:.2f}, "
                             f"sensitivity {r.sensitivity:.2f}, specificity "
                             f"{r.specificity:.2f} on {r.cases:.0f} cases.")  # fmt: skip
        lines.append(
            "- These are classifiers on simulated patients: the rows show the analysis "
            "a workshop runs on its participants' answers, not a clinical result."
        )
        return "\n".join(lines)


def what_20_cases_show() -> str:
    """The smallest effects 20 cases can show: cases gained for McNemar, volumes called right
    for the binomial test."""
    gain = next(k for k in range(1, 21)
                if stats.mcnemar([1] * k, [0] * k, [1] * k, exact=True)["p"] < 0.05)  # fmt: skip
    right = next(k for k in range(10, 21) if stats.binomial_test(k, 20)["p"] < 0.05)
    return (
        f"- **McNemar:** with no case lost between phases, at least **{gain} cases gained** "
        f"(p = {stats.mcnemar([1] * gain, [0] * gain, [1] * gain, exact=True)['p']:.3f}); every "
        "case lost raises the bar.\n"
        f"- **Real or generated:** at least **{right} of 20** volumes called right "
        f"(p = {stats.binomial_test(right, 20)['p']:.3f}, two-sided) before a reader is shown to "
        "tell them apart better than chance."
    )
