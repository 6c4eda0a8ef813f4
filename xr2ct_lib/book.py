"""The book: each notebook's :func:`setup`, and running the notebooks into ``book/executed/``.

papermill cannot read jupytext ``.py`` files, so each notebook is converted in memory,
parameterised (``profile``, ``manifest``, ``run_dir``, ``seed``) and executed; the output
is written under a temporary name and renamed only when every cell succeeded.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from xr2ct_lib.config import REPO_ROOT, RunConfig, load_config
from xr2ct_lib.files import atomic_write_text

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = REPO_ROOT / "book" / "executed"


def setup(
    profile: str = "workshop",
    manifest: str | Path | None = None,
    run_dir: str | Path | None = None,
    seed: int = 0,
    weights: str = "trained",
    threads: int = 2,
) -> RunConfig:
    """The first call of every notebook: the run's config, recorded, with torch's threads set.

    Writes ``<run_dir>/config.json``, limits torch to ``threads`` CPU threads (the budgets
    assume two cores) and prints the one-line description of the run.
    """
    import torch

    cfg = load_config(profile, manifest, run_dir, seed, weights)
    cfg.save()
    torch.set_num_threads(threads)
    print(cfg.describe())
    return cfg


def notebook_sources(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in reading order, optionally those whose name starts with ``only``."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(o) for o in only)]
        if not paths:
            raise SystemExit(f"no notebook matches {only}")
    return paths


def declared_parameters(nb) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    import re

    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return set(re.findall(r"^(\w+)\s*=", cell.source, flags=re.M))
    return set()


def run_notebook(source: Path, parameters: dict, out_dir: Path = EXECUTED_DIR) -> float:
    """Execute one notebook; return the seconds it took. Raises on the first failing cell.

    Parameters the notebook does not declare (``weights`` before chapter 4) are not passed.
    """
    import jupytext
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{source.stem}.ipynb"
    partial = out_dir / f".{source.stem}.partial.ipynb"
    failed = out_dir / f"{source.stem}.FAILED.ipynb"
    failed.unlink(missing_ok=True)
    nb = jupytext.read(source)
    parameters = {k: v for k, v in parameters.items() if k in declared_parameters(nb)}
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            nb,
            str(partial),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(NOTEBOOK_DIR),
            progress_bar=False,
        )
    except BaseException:
        final.unlink(missing_ok=True)
        if partial.exists():
            os.replace(partial, failed)
        raise
    os.replace(partial, final)
    return time.perf_counter() - t0


def run_all(
    profile: str,
    manifest: str | None,
    run_dir: str | None,
    seed: int,
    only=None,
    weights: str | None = None,
) -> dict:
    """Run every notebook in order; write ``timings-<profile>.json``; return the timings.

    ``weights`` ("shipped" or "trained") goes to the notebooks that take it (chapter 4 on);
    None leaves their default. The executed notebooks go to ``book/executed/`` (the book's),
    or to ``<run_dir>/executed/`` for a run folder of one's own, which never overwrites the
    book's chapters. Relative paths are taken from the current directory.
    """
    parameters = {"profile": profile, "seed": seed}
    if weights:
        parameters["weights"] = weights
    sources = notebook_sources(only)
    if manifest:
        parameters["manifest"] = str(Path(manifest).expanduser().resolve())
        if not Path(parameters["manifest"]).is_file():
            raise FileNotFoundError(f"{parameters['manifest']}: manifest not found")
    out_dir = EXECUTED_DIR
    if run_dir:
        parameters["run_dir"] = str(Path(run_dir).expanduser().resolve())
        out_dir = Path(parameters["run_dir"]) / "executed"
        index = Path(parameters["run_dir"]) / "prepared" / "index.csv"
        if not sources[0].stem.startswith("01") and not index.is_file():
            raise FileNotFoundError(
                f"{index} not found: run `xr2ct train` (or `xr2ct prepare`) with this "
                "--run-dir first, or start at chapter 01"
            )
    timings = {}
    for source in sources:
        print(f">> {source.name} [profile={profile}]", flush=True)
        try:
            timings[source.stem] = round(run_notebook(source, parameters, out_dir), 1)
        except Exception as e:
            raise SystemExit(
                f"notebook {source.name} failed (profile={profile}); the executed copy with the "
                f"error is {out_dir / (source.stem + '.FAILED.ipynb')}\n{type(e).__name__}: {e}"
            ) from None
        print(f"   done in {timings[source.stem]:.1f} s", flush=True)
    timings["total"] = round(sum(timings.values()), 1)
    atomic_write_text(out_dir / f"timings-{profile}.json", json.dumps(timings, indent=2))
    print(f">> all notebooks: {timings['total']:.1f} s", flush=True)
    return timings
