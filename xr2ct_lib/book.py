"""The book: each notebook's :func:`setup`, and running the notebooks into ``book/executed/``.

papermill cannot read jupytext ``.py`` files, so each notebook is converted in memory,
parameterised (``profile``, ``manifest``, ``run_dir``, ``seed``) and executed; the output
is written under a temporary name and renamed only when every cell succeeded.

:func:`run_all` runs ``jobs`` notebooks side by side, each as soon as the chapters it reads
(:data:`REQUIRES`) are done: with the shipped weights chapters 2–4 (the live training) and
5 onwards are independent. Every notebook then gets ``2 // jobs`` torch threads (the budgets
assume two cores), a number fixed by ``jobs``, not by the machine, so the tables repeat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from xr2ct_lib.config import REPO_ROOT, RunConfig, load_config
from xr2ct_lib.files import atomic_write_text

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = REPO_ROOT / "book" / "executed"
THREADS_ENV = "XR2CT_THREADS"
# the chapters each chapter reads (its "Prerequisites"); with weights="trained" chapter 5
# also reads chapter 4's live generator, and through it chapters 2 and 3
REQUIRES = {
    "02": ("01",), "03": ("02",), "04": ("03",), "05": ("01",), "06": ("05",), "07": ("05",),
    "08": ("05",), "09": ("08",), "10": ("08",), "11": ("05",), "12": ("05", "08"),
}  # fmt: skip


def setup(*params, threads: int | None = None, **named) -> RunConfig:
    """The first call of every notebook: the run's config, recorded, with torch's threads set.

    ``params`` and ``named`` are the notebook's parameters as :func:`load_config` takes them
    (``profile, manifest, run_dir, seed, weights``). Writes ``<run_dir>/config.json``, limits
    torch to ``threads`` CPU threads (default: the ``XR2CT_THREADS`` the book's runner sets,
    else 2: the budgets assume two cores) and prints the one-line description of the run.
    With ``weights="shipped"`` and a prepared cohort, it writes the cohort's latents and
    embeddings of the shipped bundle when they are missing
    (:func:`~xr2ct_lib.run.encode.encode_missing`; the loaders only read).
    """
    import torch

    from xr2ct_lib.data.cohort import is_prepared
    from xr2ct_lib.run.encode import encode_missing

    cfg = load_config(*params, **named)
    cfg.save()
    torch.set_num_threads(threads or int(os.environ.get(THREADS_ENV, 2)))
    print(cfg.describe())
    if cfg.weights == "shipped" and is_prepared(cfg.run_dir):
        encode_missing(cfg)  # the shipped bundle's latents and embeddings of this cohort
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


def hide_injected_parameters(nb) -> bool:
    """Tag papermill's injected-parameters cell ``remove-cell``, so that the built book does
    not show a second "Parameters" cell in every chapter (the notebook's own ``parameters``
    cell already shows the defaults; the run's values are in the setup cell's first line).
    Returns whether a cell was tagged."""
    tagged = False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
            tagged = True
    return tagged


def run_notebook(source: Path, parameters: dict, out_dir: Path = EXECUTED_DIR) -> float:
    """Execute one notebook; return the seconds it took. Raises on the first failing cell.

    Parameters the notebook does not declare (``weights`` before chapter 4) are not passed.
    """
    import jupytext
    import papermill as pm
    from traitlets.config import Config

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
        # The kernel talks over IPC sockets in a folder of this run's own: over TCP,
        # jupyter_client picks a free port and frees it before the kernel binds it, so two
        # notebooks started at once could both be given the same one.
        with tempfile.TemporaryDirectory(prefix="xr2ct-kernel-") as sockets:
            ipc = Config({"KernelManager": {"transport": "ipc", "ip": f"{sockets}/k"}})
            out = pm.execute_notebook(
                nb,
                str(partial),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(NOTEBOOK_DIR),
                progress_bar=False,
                config=ipc,
            )
        if hide_injected_parameters(out):
            import nbformat

            nbformat.write(out, str(partial))
    except BaseException:
        final.unlink(missing_ok=True)
        if partial.exists():
            os.replace(partial, failed)
        raise
    os.replace(partial, final)
    return time.perf_counter() - t0


def requirements(stems: list[str], weights: str | None) -> dict[str, set[str]]:
    """Which of ``stems`` (notebook names) each one must wait for (:data:`REQUIRES`)."""
    need = {k: set(v) for k, v in REQUIRES.items()}
    if weights == "trained":
        need["05"] |= {"04"}
    by_number = {s[:2]: s for s in stems}
    return {s: {by_number[n] for n in need.get(s[:2], ()) if n in by_number} for s in stems}


def with_prerequisites(only: list[str], weights: str | None = None) -> list[str]:
    """The chapter numbers ``only`` names and every chapter they read, directly or through
    others (:data:`REQUIRES`; with ``weights="trained"`` chapter 5 also reads 4), sorted:
    what a fresh clone must run before (and with) those chapters."""
    need = {k: set(v) for k, v in REQUIRES.items()}
    if weights == "trained":
        need["05"] |= {"04"}
    out, todo = set(), [str(o)[:2] for o in only]
    while todo:
        cur = todo.pop()
        if cur not in out:
            out.add(cur)
            todo.extend(need.get(cur, ()))
    return sorted(out)


def _dependents(stem: str, need: dict[str, set[str]]) -> set[str]:
    """Every notebook that waits for ``stem``, directly or through others."""
    out, todo = set(), [stem]
    while todo:
        cur = todo.pop()
        for s, reqs in need.items():
            if cur in reqs and s not in out:
                out.add(s)
                todo.append(s)
    return out


def _run_in_child(source: Path, parameters: dict, threads: int, out_dir: Path) -> float:
    """:func:`run_notebook` in a child process whose kernel gets ``threads`` torch threads."""
    env = {**os.environ, THREADS_ENV: str(threads)}
    code = "import json, sys; from pathlib import Path; from xr2ct_lib.book import run_notebook; "
    code += "print(run_notebook(Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])))"
    args = [str(source), json.dumps(parameters), str(out_dir)]
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                         text=True)  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"exit status {out.returncode} (its error is printed above)")
    return float(out.stdout.strip().splitlines()[-1])


def reference_seconds() -> float:
    """``reference_s``: how fast this machine is for the book's kind of work, in seconds.

    A fixed workload, best of three on two torch threads after one warm-up: forward and
    backward of a small 3D conv net at the workshop latent size (16 times) and a 3D Gaussian
    filter of a 96³ volume. Machines of the same size differ by 2–3× on 3D convolutions, so
    a chapter's time means something only beside this number (a machine with twice the
    ``reference_s`` takes about twice as long).
    """
    import numpy as np
    import torch
    from scipy import ndimage

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv3d(8, 32, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv3d(32, 32, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv3d(32, 8, 3, padding=1),
        )  # fmt: skip
        x = torch.randn(2, 8, 32, 32, 32, generator=gen)
        vol = np.random.default_rng(0).standard_normal((96, 96, 96)).astype(np.float32)

        def work() -> float:
            t0 = time.perf_counter()
            for _ in range(16):
                net.zero_grad()
                net(x).square().mean().backward()
            ndimage.gaussian_filter(vol, 2.0)
            return time.perf_counter() - t0

        work()
        return round(min(work() for _ in range(3)), 2)
    finally:
        torch.set_num_threads(threads)


def timings_markdown(timings: dict, profile: str) -> str:
    """The run's timings as the Markdown table that ``book/timings.md`` includes."""
    rows = [(k, v) for k, v in timings.items() if k[:2].isdigit()]
    lines = [
        f"Profile `{profile}`, {timings.get('jobs', '?')} notebook(s) at a time"
        + (f", on a machine with `reference_s` = {timings['reference_s']:.2f}"
           if timings.get("reference_s") is not None else "")
        + " (`book/executed/timings-" + profile + ".json`).",
        "",
        "| chapter | seconds | minutes |",
        "|---|---:|---:|",
        *[f"| {k} | {v:.0f} | {v / 60:.1f} |" for k, v in rows],
        f"| **notebook by notebook** | {timings.get('sum', 0):.0f} | "
        f"{timings.get('sum', 0) / 60:.1f} |",
        f"| **wall clock** | {timings.get('wall', 0):.0f} | {timings.get('wall', 0) / 60:.1f} |",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def run_all(
    profile: str,
    manifest: str | None,
    run_dir: str | None,
    seed: int,
    only=None,
    weights: str | None = None,
    jobs: int = 2,
    reference: bool = True,
) -> dict:
    """Run the notebooks, ``jobs`` at a time in the order :data:`REQUIRES` allows; write
    ``timings-<profile>.json`` (seconds per notebook, their ``sum``, the ``wall`` time and
    the machine's :func:`reference_seconds`, unless ``reference`` is False) and the table
    ``timings.md`` that the book's page on run times includes; return the timings.

    ``weights`` ("shipped" or "trained") goes to the notebooks that take it (chapter 4 on);
    None leaves their default (shipped). The executed notebooks go to ``book/executed/`` (the
    book's), or to ``<run_dir>/executed/`` for a run folder of one's own, which never
    overwrites the book's chapters. Relative paths are taken from the current directory.
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
    sources = {p.stem: p for p in sources}
    need = requirements(list(sources), weights)
    jobs = max(1, int(jobs))
    waiting = {s: _dependents(s, need) for s in sources}
    timings, running, failed = {}, {}, None
    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        while sources or running:
            ready = [s for s in sources if not need[s] - set(timings)] if failed is None else []
            ready.sort(key=lambda s: -len(waiting[s]))  # those more chapters wait for first
            for stem in ready[: jobs - len(running)]:
                print(f">> {stem}.py [profile={profile}]", flush=True)
                if jobs == 1:  # here, in this thread
                    fut = Future()
                    try:
                        fut.set_result(run_notebook(sources.pop(stem), parameters, out_dir))
                    except Exception as e:
                        fut.set_exception(e)
                else:
                    src, threads = sources.pop(stem), 2 // jobs or 1
                    fut = pool.submit(_run_in_child, src, parameters, threads, out_dir)
                running[fut] = stem
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                stem = running.pop(fut)
                try:
                    timings[stem] = round(fut.result(), 1)
                    print(f"   {stem} done in {timings[stem]:.1f} s", flush=True)
                except Exception as e:
                    failed = failed or (stem, e)
    if failed is not None:
        stem, e = failed
        raise SystemExit(
            f"notebook {stem}.py failed (profile={profile}); the executed copy with the "
            f"error is {out_dir / (stem + '.FAILED.ipynb')}\n{type(e).__name__}: {e}"
        )
    timings = dict(sorted(timings.items()))
    timings["sum"] = round(sum(timings.values()), 1)
    timings["wall"] = round(time.perf_counter() - t0, 1)
    timings["jobs"] = jobs
    # how fast this machine is, measured after the notebooks so that it competes with none
    timings["reference_s"] = reference_seconds() if reference else None
    atomic_write_text(out_dir / f"timings-{profile}.json", json.dumps(timings, indent=2))
    atomic_write_text(out_dir / "timings.md", timings_markdown(timings, profile))
    print(f">> all notebooks: {timings['wall']:.1f} s ({jobs} at a time; "
          f"{timings['sum']:.1f} s notebook by notebook)", flush=True)  # fmt: skip
    return timings
