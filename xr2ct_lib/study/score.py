"""Score the readers' CSV files against the kit's key: the paper's Table 6 and its tests.

Per reader and phase (1: X-ray; 2: X-ray + generated CTPA): accuracy, sensitivity,
specificity, PPV, NPV; the exact McNemar test of phase 1 vs phase 2 correctness on the same
cases; the real-or-generated accuracy with an exact binomial test against 0.5 (chance); the
mean Likert ratings of the generated volumes (and of the real ones, for reference).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xr2ct_lib.eval import stats
from xr2ct_lib.study.kit import KEY_COLUMNS, TASKS, key_path_for

RESPONSE_COLUMNS = ["kit_id", "reader", "task", "code", "answer", "anatomy", "consistency"]
ANSWERS = {"realism": ("real", "generated"), "pe_cxr": ("pe", "no_pe"), "pe_ctpa": ("pe", "no_pe")}
PHASES = {"pe_cxr": "phase 1: X-ray", "pe_ctpa": "phase 2: X-ray + generated CTPA"}


class ResponseError(ValueError):
    """A response file that cannot be scored; the message names the file, the row, the problem."""


def read_key(path: str | Path) -> pd.DataFrame:
    """The answer key the kit builder wrote beside the kit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: answer key not found (it is written beside the kit as "
                                "<KIT>-key.csv; pass --key)")  # fmt: skip
    key = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(KEY_COLUMNS) - set(key.columns)
    if missing:
        raise ValueError(f"{path}: not an answer key (missing columns {sorted(missing)})")
    if key.kit_id.nunique() != 1:
        raise ValueError(f"{path}: rows of {key.kit_id.nunique()} different kits")
    return key


def read_responses(path: str | Path, key: pd.DataFrame) -> pd.DataFrame:
    """One reader's CSV, checked row by row against the key; raises :class:`ResponseError`."""
    path = Path(path)

    def bad(row, problem):
        where = f"row {row}" if row is not None else "header"
        return ResponseError(f"{path}: {where}: {problem}")

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ResponseError(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in RESPONSE_COLUMNS if c not in df.columns]
    if missing:
        raise bad(None, f"missing column(s) {missing}; expected {RESPONSE_COLUMNS}")
    if df.empty:
        raise ResponseError(f"{path}: no answers")
    kit_id = key.kit_id.iloc[0]
    codes = {t: set(key.code[key.task == t]) for t in TASKS}
    seen = {}
    for i, r in enumerate(df.itertuples(index=False), start=2):  # row 1 is the header
        if r.kit_id != kit_id:
            raise bad(i, f"kit_id {r.kit_id!r} is not this kit's ({kit_id}): another kit's answers")
        if not r.reader.strip():
            raise bad(i, "empty reader name")
        if r.task not in TASKS:
            raise bad(i, f"unknown task {r.task!r}; expected one of {list(TASKS)}")
        if r.code not in codes[r.task]:
            raise bad(i, f"case code {r.code!r} is not a {r.task} case of this kit")
        if r.answer not in ANSWERS[r.task]:
            raise bad(i, f"answer {r.answer!r} to {r.task} case {r.code}; expected one of "
                      f"{list(ANSWERS[r.task])}")  # fmt: skip
        if r.task == "realism":
            for col in ("anatomy", "consistency"):
                v = getattr(r, col)
                if v not in {"1", "2", "3", "4", "5"}:
                    raise bad(i, f"{col} rating {v!r} of case {r.code}; expected 1–5")
        k = (r.reader.strip(), r.task, r.code)
        if k in seen:
            raise bad(i, f"case {r.code} of {r.task} answered twice by {k[0]} (also row {seen[k]})")
        seen[k] = i
    df["reader"] = df.reader.str.strip()
    for reader, g in df.groupby("reader"):
        for task in TASKS:
            got = set(g.code[g.task == task])
            if got and got != codes[task]:
                miss = sorted(codes[task] - got)
                raise ResponseError(f"{path}: reader {reader!r} answered {len(got)} of "
                                    f"{len(codes[task])} {task} cases; missing {miss}")  # fmt: skip
    df["file"] = str(path)
    return df


@dataclass
class ReaderScores:
    """Table 6 (per reader and phase), the phase comparison, the real-or-generated task."""

    pe: pd.DataFrame
    comparison: pd.DataFrame
    realism: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def score_responses(responses: pd.DataFrame, key: pd.DataFrame) -> ReaderScores:
    """Score checked responses (:func:`read_responses`) of one or more readers."""
    truth = {(t, c): v for t, c, v in zip(key.task, key.code, key.truth, strict=True)}
    pe_rows, cmp_rows, real_rows, notes = [], [], [], []
    for reader, g in responses.groupby("reader", sort=False):
        answered = {t: g[g.task == t].set_index("code") for t in TASKS}
        preds = {}
        for task, phase in PHASES.items():
            a = answered[task]
            if a.empty:
                notes.append(f"{reader}: no answers to {phase}")
                continue
            cases = sorted(a.index)
            y = np.array([truth[(task, c)] == "pe" for c in cases], int)
            pred = np.array([a.answer[c] == "pe" for c in cases], int)
            preds[task] = dict(zip(cases, pred, strict=True)), dict(zip(cases, y, strict=True))
            m = stats.binary_metrics(y, pred, 0.5)
            pe_rows.append({"reader": reader, "phase": phase, "cases": len(cases),
                            **{k: m[k] for k in ("accuracy", "sensitivity", "specificity", "ppv",
                                                 "npv", "tp", "fp", "tn", "fn")}})  # fmt: skip
        if len(preds) == 2 and set(preds["pe_cxr"][0]) & set(preds["pe_ctpa"][0]):
            (p1, y), (p2, _) = preds["pe_cxr"], preds["pe_ctpa"]
            cases = sorted(set(p1) & set(p2))  # the same cases read in both phases
            t = stats.mcnemar([y[c] for c in cases], [p1[c] for c in cases],
                              [p2[c] for c in cases], exact=True)  # fmt: skip
            cmp_rows.append({"reader": reader, "cases": len(cases),
                             "accuracy phase 1": np.mean([p1[c] == y[c] for c in cases]),
                             "accuracy phase 2": np.mean([p2[c] == y[c] for c in cases]),
                             "right only in phase 1": t["b"], "right only in phase 2": t["c"],
                             "McNemar exact p": t["p"]})  # fmt: skip
        a = answered["realism"]
        if a.empty:
            notes.append(f"{reader}: no answers to the real-or-generated task")
            continue
        kind = np.array([truth[("realism", c)] for c in a.index])
        correct = int(np.sum(a.answer.to_numpy() == kind))
        b = stats.binomial_test(correct, len(a))
        rating = {col: a[col].astype(int).to_numpy() for col in ("anatomy", "consistency")}
        real_rows.append({
            "reader": reader, "volumes": len(a), "correct": correct, "accuracy": b["proportion"],
            "95% CI": f"{b['lo']:.2f}–{b['hi']:.2f}", "binomial p (vs 0.5)": b["p"],
            "anatomy, generated": rating["anatomy"][kind == "generated"].mean(),
            "consistency, generated": rating["consistency"][kind == "generated"].mean(),
            "anatomy, real": rating["anatomy"][kind == "real"].mean(),
            "consistency, real": rating["consistency"][kind == "real"].mean(),
        })  # fmt: skip

    def frame(rows, index):
        return pd.DataFrame(rows).set_index(index) if rows else pd.DataFrame()

    return ReaderScores(frame(pe_rows, ["reader", "phase"]), frame(cmp_rows, "reader"),
                        frame(real_rows, "reader"), notes)  # fmt: skip


def score_files(
    kit: str | Path, responses: Iterable[str | Path], key: str | Path | None = None
) -> ReaderScores:
    """Read the key (default ``<KIT>-key.csv``) and every response file, check them, score."""
    kit = Path(kit)
    meta = kit / "kit.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{kit}: not a reader kit (no kit.json)")
    key_df = read_key(key if key is not None else key_path_for(kit))
    kit_id = json.loads(meta.read_text())["kit_id"]
    if key_df.kit_id.iloc[0] != kit_id:
        raise ValueError(f"the key belongs to kit {key_df.kit_id.iloc[0]}, {kit} is kit {kit_id}")
    frames = [read_responses(p, key_df) for p in responses]
    if not frames:
        raise ValueError("no response files given")
    owner = {}
    for f in frames:
        for reader in f.reader.unique():
            if reader in owner:
                raise ResponseError(
                    f"reader {reader!r} appears in {owner[reader]} and in {f.file.iloc[0]}; "
                    "rename one or drop a duplicate file"
                )
            owner[reader] = f.file.iloc[0]
    return score_responses(pd.concat(frames, ignore_index=True), key_df)
