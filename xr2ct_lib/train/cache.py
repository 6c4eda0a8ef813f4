"""Train or reuse: a trained model is kept beside the recipe that made it.

A recipe is everything that decides the result (kind of model, profile, patients, steps,
learning rate, seed, ...). Its hash is written to ``<model dir>/recipe.json`` after the
model and its training history, so that file marks a finished run: while it matches, the
model is loaded instead of trained again; when anything in the recipe changes, it is
retrained.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pandas as pd

from xr2ct_lib.config import RunConfig
from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.utils import recipe_key

Model = TypeVar("Model")


@dataclass(frozen=True)
class TrainCache:
    """A model directory, the CSV of its training history, and the recipe they must match."""

    directory: Path
    history_file: Path
    recipe: dict

    @classmethod
    def for_run(cls, cfg: RunConfig, name: str, ids: list[str], **recipe) -> TrainCache:
        """``models/<name>/`` and ``models/<name>_history.csv`` of the run; the recipe is
        ``recipe`` plus the profile, the training patients and the seed."""
        models = cfg.run_dir / "models"
        full = dict(recipe, profile=cfg.profile.name, ids=list(ids), seed=cfg.seed)
        return cls(models / name, models / f"{name}_history.csv", full)

    @property
    def key(self) -> str:
        return recipe_key(**self.recipe)

    @property
    def recipe_file(self) -> Path:
        return Path(self.directory) / "recipe.json"

    def is_done(self) -> bool:
        """True when a finished run of this recipe is on disk."""
        f = self.recipe_file
        return (
            f.is_file()
            and json.loads(f.read_text()).get("key") == self.key
            and Path(self.history_file).is_file()
        )

    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.history_file)

    def commit(self, history: pd.DataFrame, seconds: float) -> None:
        """Write the history, then the recipe (last: it marks the run finished)."""
        atomic_write_text(self.history_file, history.to_csv(index=False))
        atomic_write_text(self.recipe_file, json.dumps({"key": self.key, "seconds": seconds}))


def train_or_reuse(
    cache: TrainCache,
    load: Callable[[Path], Model],
    train: Callable[[], tuple[Model, pd.DataFrame]],
) -> tuple[Model, pd.DataFrame]:
    """``(model, history)``: loaded when ``cache`` holds a finished run, else trained.

    ``train()`` trains and saves the model into ``cache.directory``; the history and the
    recipe are written after it returns.
    """
    if cache.is_done():
        return load(Path(cache.directory)), cache.history()
    t0 = time.perf_counter()
    model, history = train()
    cache.commit(history, time.perf_counter() - t0)
    return model, history
