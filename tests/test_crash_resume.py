"""Kill a training process with SIGKILL, even in the middle of a save, and resume it.

A three-stage run (3 + 2 + 6 steps, a checkpoint after every step) is killed five times at
different points (while writing a checkpoint's tensors, while writing a stage's final
weights, right after the ``LATEST`` pointer moved, at the step after a stage boundary,
and at a random moment), restarted each time with the same command, and must end with
weights bit-identical to an uninterrupted run's. After every kill, ``LATEST`` must name a
complete checkpoint.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from xr2ct_lib.checkpoint import latest, load_checkpoint

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from safetensors.torch import save_file as write
    from test_diffusion_train import tiny_data, tiny_model
    from xr2ct_lib import checkpoint as ck
    from xr2ct_lib.train.diffusion import run_staged_training

    mode, ckpt, out = sys.argv[1:4]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    calls = [0]
    if mode.startswith("in-save:"):  # after the Nth tensor file is written, before it is used
        n, orig = int(mode.split(":")[1]), ck.save_file
        def save_file(*a, **k):
            orig(*a, **k)
            calls[0] += 1
            if calls[0] == n:
                die()
        ck.save_file = save_file
    if mode.startswith("after-pointer:"):  # right after LATEST moved, before old steps go
        n, orig = int(mode.split(":")[1]), ck.atomic_write_text
        def atomic_write_text(path, text):
            orig(path, text)
            if os.path.basename(str(path)) == "LATEST":
                calls[0] += 1
                if calls[0] == n:
                    die()
        ck.atomic_write_text = atomic_write_text

    def on_step(step, record):
        with open(os.path.join(out, "progress"), "a") as f:
            f.write(f"{{record['stage']}}:{{step}}\\n")
        if mode == f"at:{{record['stage']}}:{{step}}":
            die()

    model = tiny_model(seed=0)
    res = run_staged_training(model, tiny_data(), (3, 2, 6), batch=2, ckpt_dir=ckpt, seed=4,
                              lrs=(1e-3, 1e-3, 1e-3), ckpt_every=1, progress=False,
                              on_step=on_step)
    state = {{f"online.{{k}}": v for k, v in model.denoiser.state_dict().items()}}
    state.update({{f"ema.{{k}}": v for k, v in res.ema_state.items()}})
    write({{k: v.contiguous() for k, v in state.items()}}, os.path.join(out, "weights.safetensors"))
    res.history.to_csv(os.path.join(out, "history.csv"), index=False)
    """
)


def _run(script: Path, mode: str, ckpt: Path, out: Path, kill_after: str | None = None):
    env = {**os.environ, "XR2CT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), mode, str(ckpt), str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:  # SIGKILL from outside, a random moment after that step
        marker = out / "progress"
        while proc.poll() is None:
            if marker.is_file() and kill_after in marker.read_text().split():
                time.sleep(random.Random(0).uniform(0.0, 0.2))
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def _check_latest(ckpt: Path) -> None:
    """Every stage's LATEST (when there is one) names a complete, loadable checkpoint."""
    for stage in ckpt.iterdir() if ckpt.is_dir() else []:
        last = latest(stage)
        if last is not None:
            tensors, cfg = load_checkpoint(last)
            assert cfg["step"] >= 1 and tensors, stage


def test_sigkill_at_any_point_then_resume_gives_the_uninterrupted_weights(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    ref_out.mkdir()
    out.mkdir()
    rc, err = _run(script, "run", tmp_path / "ref_ckpt", ref_out)
    assert rc == 0, err[-3000:]

    ckpt = tmp_path / "ckpt"
    kills = [
        ("in-save:2", None),  # the 2nd checkpoint's tensors written, its pointer not moved
        ("in-save:3", None),  # (resumed at step 1) inside the first stage's final weights
        ("after-pointer:1", None),  # the pointer moved, old steps and final not yet written
        ("at:drr:1", None),  # one step past a stage boundary
        ("run", "cxr:1"),  # from outside, at a random moment in the last stage
    ]
    for mode, kill_after in kills:
        rc, err = _run(script, mode, ckpt, out, kill_after)
        assert rc == -signal.SIGKILL, (mode, rc, err[-3000:])
        _check_latest(ckpt)
    rc, err = _run(script, "run", ckpt, out)
    assert rc == 0, err[-3000:]

    ref, got = (
        load_file(str(ref_out / "weights.safetensors")),
        load_file(str(out / "weights.safetensors")),
    )
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    h_ref = pd.read_csv(ref_out / "history.csv").drop(columns="sec")
    h_got = pd.read_csv(out / "history.csv").drop(columns="sec")
    assert len(h_ref) == 11
    pd.testing.assert_frame_equal(h_got, h_ref, check_exact=True)
    for stage in ("uncond", "drr", "cxr"):
        names = sorted(p.name for p in (ckpt / stage).iterdir())
        assert names == ["LATEST", "final", sorted(n for n in names if n.startswith("step-"))[0]]
