"""``xr2ct train`` killed (SIGKILL) thirteen times, inside its checkpoint and bundle writes
(six) and at random moments (seven), then run once more: the bundle is byte-identical to
an uninterrupted run's and no temporary file is left anywhere in the run folder.

Cheap by construction: one server process imports the library once (tiny ``smoke``
profile, one thread) and forks a child per run, so a run costs its work, not an
interpreter start. A child dies inside a write by SIGKILLing itself on the n-th call of the
function that writes (before or after it runs); the server kills the others after a
random delay, then any worker the run had forked. (A worker outliving its run must not
keep the work folder locked: tests/test_refusals.py checks that.)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from real_cohort import write_cohort, write_manifest

TESTS = Path(__file__).resolve().parent
pytestmark = [pytest.mark.slow,  # ~40 s on two loaded CPU cores; run by default
              pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")]  # fmt: skip

SERVER = textwrap.dedent(
    """
    import importlib, json, os, signal, sys, time
    sys.path.insert(0, {tests!r})
    import xr2ct_lib.config as config
    from tiny_run import PROFILE
    config.PROFILES["smoke"] = PROFILE
    from xr2ct_lib.cli import main
    import xr2ct_lib.data.cohort, xr2ct_lib.generation.pipeline, xr2ct_lib.train.bundle  # warm
    import xr2ct_lib.train.generator, xr2ct_lib.train.autoencoder, xr2ct_lib.train.encoder

    def die_at(target, n, when):
        module, name = target.rsplit(".", 1)
        module = importlib.import_module(module)
        real, calls = getattr(module, name), [0]

        def hooked(*a, **k):
            calls[0] += 1
            if calls[0] == n and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            out = real(*a, **k)
            if calls[0] == n and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        setattr(module, name, hooked)

    for line in sys.stdin:
        spec = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)  # its own process group, with any worker it forks
            fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if spec.get("hook"):
                die_at(*spec["hook"])
            try:
                rc = main(spec["argv"])
            except SystemExit as e:
                rc = e.code
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(rc or 0))
        t0, status = time.monotonic(), None
        while spec.get("delay") is not None and status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
            elif time.monotonic() - t0 >= spec["delay"]:
                os.kill(pid, signal.SIGKILL)
            else:
                time.sleep(0.002)
        if status is None:
            status = os.waitpid(pid, 0)[1]
        try:  # workers the killed run forked (prepare's pool) go with it, as in a terminal
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        print(json.dumps({{"killed": killed, "rc": rc,
                          "seconds": time.monotonic() - t0}}), flush=True)
    """
)

# (function whose n-th call kills the run, before or after it runs): inside the writes
CHECKPOINT_WRITE = ("xr2ct_lib.checkpoint.save_file", 1, "after")  # weights, no config yet
CHECKPOINT_SWAP = ("xr2ct_lib.checkpoint.replace_dir", 2, "before")  # complete, not renamed
POINTER = ("xr2ct_lib.checkpoint.atomic_write_text", 1, "before")  # step saved, not LATEST
BUNDLE_ASSEMBLY = ("xr2ct_lib.models.bundle._to_dtype", 2, "before")  # half a temp bundle
BUNDLE_SWAP = ("xr2ct_lib.models.bundle.replace_dir", 1, "before")  # temp bundle complete
STAGES = ("xr2ct_lib.train.bundle.add_stages", 1, "before")  # bundle without its stages


def _bundle_files(bundle: Path) -> dict[str, bytes]:
    """Every file of a bundle but its provenance (times, command): weights, configs, curve."""
    return {str(f.relative_to(bundle)): f.read_bytes() for f in sorted(bundle.rglob("*"))
            if f.is_file() and f.name != "provenance.json"}  # fmt: skip


def test_train_killed_a_dozen_times_resumes_byte_identical_with_no_temp_left(tmp_path):
    from xr2ct_lib.files import TEMPORARY

    folder = tmp_path / "cohort"
    manifest = write_manifest(write_cohort(folder, n=6), folder / "cohort.csv")
    server = tmp_path / "server.py"
    server.write_text(SERVER.format(tests=str(TESTS)))
    env = {**os.environ, "XR2CT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("XR2CT_DEBUG", None)
    proc = subprocess.Popen([sys.executable, str(server)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)  # fmt: skip

    def run(run_dir: Path, **spec) -> dict:
        argv = ["train", "--profile", "smoke", "--ckpt-every", "1", "--manifest", str(manifest),
                "--run-dir", str(run_dir)]  # fmt: skip
        proc.stdin.write(json.dumps({"argv": argv, "log": str(tmp_path / "log.txt"), **spec})
                         + "\n")  # fmt: skip
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    log: list[dict] = []

    def kill(**spec) -> dict:
        log.append({**spec, **run(killed, **spec)})
        return log[-1]

    rng, killed = random.Random(21), tmp_path / "killed"
    try:
        base = run(tmp_path / "uninterrupted")
        assert base["rc"] == 0, (tmp_path / "log.txt").read_text()[-3000:]
        for hook in (CHECKPOINT_WRITE, CHECKPOINT_SWAP, POINTER):  # while steps are left
            kill(hook=list(hook))
        bundle_hooks = [BUNDLE_ASSEMBLY, BUNDLE_SWAP, STAGES]  # every run ends with the bundle
        span, by_delay = base["seconds"], 0
        for attempt in range(30):  # seven kills at random moments, the bundle's in between
            if by_delay == 7:
                break
            r = kill(delay=round(rng.uniform(0.02, 0.8) * span, 3))
            by_delay += r["killed"]
            span = span if r["killed"] else r["seconds"]  # finished: later runs are shorter
            if attempt % 2 and bundle_hooks:
                kill(hook=list(bundle_hooks.pop(0)))
        for hook in bundle_hooks:
            kill(hook=list(hook))
        last = run(killed)
    finally:
        proc.stdin.close()
        proc.wait(timeout=120)
    assert last["rc"] == 0, (tmp_path / "log.txt").read_text()[-3000:]
    assert all(r["killed"] or r["rc"] == 0 for r in log), log  # killed, or it finished
    assert [r["killed"] for r in log if "hook" in r] == [True] * 6, log  # every write was hit
    assert sum(r["killed"] for r in log) == 13, log

    a, b = _bundle_files(tmp_path / "uninterrupted" / "bundle"), _bundle_files(killed / "bundle")
    assert a.keys() == b.keys() and "stages/uncond/model.safetensors" in a
    assert [k for k in a if a[k] != b[k]] == []
    left = [p for p in killed.rglob("*") if TEMPORARY.fullmatch(p.name) or p.suffix == ".tmp"]
    assert left == [], left
