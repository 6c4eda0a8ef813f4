"""Train or reuse: a finished run is reused while its recipe is unchanged, retrained otherwise."""

from __future__ import annotations

import json
import os
import stat

import pandas as pd
import pytest

from xr2ct_lib.files import current_umask
from xr2ct_lib.train.cache import TrainCache, train_or_reuse
from xr2ct_lib.utils import recipe_key


class Trainer:
    """Counts trainings; 'trains' by writing its recipe's lr into the model directory."""

    def __init__(self):
        self.calls = 0

    def __call__(self, cache: TrainCache, fail: bool = False):
        def train():
            self.calls += 1
            cache.directory.mkdir(parents=True, exist_ok=True)
            (cache.directory / "weights.txt").write_text(str(cache.recipe["lr"]))
            if fail:
                raise RuntimeError("killed mid-training")
            return f"model lr={cache.recipe['lr']}", pd.DataFrame(
                {"step": [0, 1], "loss": [1.0, 0.5]}
            )

        def load(directory):
            return f"loaded lr={(directory / 'weights.txt').read_text()}"

        return train_or_reuse(cache, load, train)


def test_reuse_while_the_recipe_matches_and_retrain_when_it_changes(tmp_path):
    run = Trainer()
    cache = TrainCache(tmp_path / "m", tmp_path / "m_history.csv", {"kind": "x", "lr": 0.1})
    model, hist = run(cache)
    assert (model, run.calls) == ("model lr=0.1", 1)
    again, hist_again = run(
        TrainCache(cache.directory, cache.history_file, {"lr": 0.1, "kind": "x"})
    )
    assert (again, run.calls) == ("loaded lr=0.1", 1)  # key order does not matter
    pd.testing.assert_frame_equal(hist_again, hist)
    changed, _ = run(TrainCache(cache.directory, cache.history_file, {"kind": "x", "lr": 0.2}))
    assert (changed, run.calls) == ("model lr=0.2", 2)
    recipe = json.loads((tmp_path / "m" / "recipe.json").read_text())
    assert recipe["key"] == recipe_key(kind="x", lr=0.2) and recipe["seconds"] >= 0
    mode = stat.S_IMODE(os.stat(tmp_path / "m" / "recipe.json").st_mode)
    assert mode == 0o666 & ~current_umask()  # as the umask allows, not mkstemp's 0600


def test_a_run_that_died_is_trained_again(tmp_path):
    run = Trainer()
    cache = TrainCache(tmp_path / "m", tmp_path / "h.csv", {"lr": 0.1})
    with pytest.raises(RuntimeError, match="killed"):
        run(cache, fail=True)
    assert not cache.recipe_file.exists() and not cache.is_done()
    model, _ = run(cache)
    assert (model, run.calls) == ("model lr=0.1", 2)
    cache.history_file.unlink()  # a recipe without its history is not a finished run
    assert not cache.is_done()
