"""Which patients go into the reader study: the paper's 10 + 10 design, drawn with a seed.

The PE task (phase 1: X-ray; phase 2: X-ray + generated CTPA) needs patients with a generated
volume. The real-or-generated task shows generated volumes of other patients where the run
has them, and real volumes of patients outside both, matched to the generated ones' PE mix
so that "has a clot" does not tell real from generated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np


class KitInputError(ValueError):
    """The run cannot supply the cases the kit asks for."""


@dataclass(frozen=True)
class Selection:
    pe: list[str]
    realism_real: list[str]
    realism_generated: list[str]
    notes: list[str] = field(default_factory=list)


def _pick(rng: np.random.Generator, pool: list[str], k: int) -> list[str]:
    return [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))] if k else []


def select_cases(
    labels: Mapping[str, int],
    generated_ids: Iterable[str],
    n_per_class: int = 10,
    n_realism: int = 10,
    seed: int = 0,
    where: str = "the run",
) -> Selection:
    """Draw ``n_per_class`` PE + non-PE patients with a generated CTPA, and ``n_realism`` real +
    ``n_realism`` generated volumes; raise :class:`KitInputError` naming what is missing."""
    if n_per_class < 1 or n_realism < 1:
        raise KitInputError(f"need at least one case per class and kind, got {n_per_class} "
                            f"per class and {n_realism} per kind")  # fmt: skip
    generated = sorted(set(generated_ids))
    unknown = [p for p in generated if p not in labels]
    if unknown:
        raise KitInputError(f"{where}: generated volumes of patients without a label: {unknown}")
    pos = [p for p in generated if labels[p] == 1]
    neg = [p for p in generated if labels[p] == 0]
    short = [f"{n_per_class - len(g)} more {name}" for g, name in ((pos, "PE"), (neg, "non-PE"))
             if len(g) < n_per_class]  # fmt: skip
    if short:
        raise KitInputError(
            f"{where}: the PE task needs {n_per_class} PE and {n_per_class} non-PE patients with "
            f"a generated CTPA; {len(generated)} generated volumes give {len(pos)} PE and "
            f"{len(neg)} non-PE (missing: {', '.join(short)}). Generate more (chapter 5, "
            "`xr2ct generate`) or ask for fewer cases per class."
        )
    rng = np.random.default_rng(seed)
    pe = _pick(rng, pos, n_per_class) + _pick(rng, neg, n_per_class)
    notes = []
    spare = [p for p in generated if p not in pe]
    if len(spare) >= n_realism:
        gen = _pick(rng, spare, n_realism)
    else:
        gen = spare + _pick(rng, [p for p in pe], n_realism - len(spare))
        notes.append(f"{n_realism - len(spare)} of the {n_realism} generated volumes of the "
                     "real-or-generated task belong to patients of the PE task (too few other "
                     "generated volumes)")  # fmt: skip
    others = [p for p in sorted(labels) if p not in set(pe) | set(gen)]
    if len(others) < n_realism:
        raise KitInputError(
            f"{where}: the real-or-generated task needs {n_realism} real CTPA of patients outside "
            f"the kit's other cases; only {len(others)} remain of {len(labels)} prepared patients"
        )
    want_pe = sum(labels[p] for p in gen)
    real_pos = [p for p in others if labels[p] == 1]
    k_pos = min(want_pe, len(real_pos), n_realism)
    real = _pick(rng, real_pos, k_pos)
    rest = [p for p in others if p not in real]
    real_neg = [p for p in rest if labels[p] == 0]
    k_neg = min(n_realism - k_pos, len(real_neg))
    real += _pick(rng, real_neg, k_neg)
    real += _pick(rng, [p for p in rest if p not in real], n_realism - len(real))
    return Selection(pe, real, gen, notes)
