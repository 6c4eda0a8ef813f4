"""``xr2ct train`` on a user's cohort (real formats, no DRRs), then ``xr2ct generate`` on it;
under ``accelerate launch`` with two CPU processes; killed anywhere and resumed; and its
refusals (one line, exit 1).

The profile is a tiny ``smoke`` (``tests/tiny_run.PROFILE``) put in place of the real one,
in this process (monkeypatch) and in launched ones (a short launcher script).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from real_cohort import write_cohort, write_manifest
from tiny_run import PROFILE

import xr2ct_lib.config as config
from xr2ct_lib.cli import main

TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _tiny(monkeypatch):
    monkeypatch.setenv("XR2CT_NO_PROGRESS", "1")
    monkeypatch.delenv("XR2CT_DEBUG", raising=False)
    monkeypatch.setitem(config.PROFILES, "smoke", PROFILE)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cohort")
    return write_manifest(write_cohort(folder, n=6), folder / "my cohort.csv")


@pytest.fixture(scope="module")
def trained(manifest, tmp_path_factory) -> Path:
    """The cohort trained by one uninterrupted ``xr2ct train`` (stages auto): its run dir."""
    run = tmp_path_factory.mktemp("trained") / "runs" / "mine"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XR2CT_NO_PROGRESS", "1")
        mp.setitem(config.PROFILES, "smoke", PROFILE)
        assert main(_train("--manifest", manifest, "--run-dir", run)) == 0
    return run


def _train(*extra) -> list[str]:
    return ["train", "--profile", "smoke", "--ckpt-every", "1", *map(str, extra)]


def _sha(f: Path) -> str:
    return hashlib.sha256(f.read_bytes()).hexdigest()


def test_train_resume_and_generate_a_cohort_without_drrs(manifest, trained, tmp_path, capsys):
    run = tmp_path / "runs" / "other"
    rc = main(_train("--manifest", manifest, "--run-dir", run, "--stages", "uncond,drr,cxr"))
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    line = err.strip().splitlines()[-1]
    assert str(manifest) in line and "no patient has a DRR" in line
    assert "--stages uncond,cxr" in line and not (run / "models").exists()  # before the VAE

    bundle = trained / "bundle"  # not weights/smoke: a user's own cohort
    prov = json.loads((bundle / "provenance.json").read_text())
    assert prov["schedule"]["diffusion"] == [2, 0, 3]  # --stages auto, no DRRs: uncond, cxr
    assert prov["cohort"]["simulated"] is False and prov["cohort"]["train_patients"] == 4
    curve = pd.read_csv(bundle / "loss_curve.csv")
    assert curve.groupby("part").size().to_dict() == {"vae": 4, "encoder": 4, "uncond": 2,
                                                      "cxr": 3}  # fmt: skip
    weights = _sha(bundle / "denoiser" / "model.safetensors")
    rc = main(_train("--manifest", manifest, "--run-dir", trained))  # again: everything reused
    out, err = capsys.readouterr()
    assert rc == 0 and _sha(bundle / "denoiser" / "model.safetensors") == weights
    assert "[diffusion] stages uncond, cxr: (2, 0, 3) steps" in out

    gen = tmp_path / "generated"
    rc = main(["generate", "--quiet", "--manifest", str(manifest), "--checkpoint", str(bundle),
               "--out-dir", str(gen)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    index = pd.read_csv(gen / "index.csv", dtype={"patient_id": str})
    assert index.patient_id.tolist() == [f"R{i}" for i in range(6)]
    assert all((gen / f).is_file() for f in index.file)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--stages", "cxr,vae"], ["--stages cxr,vae", "uncond, drr, cxr"]),
        (["--stages", "uncond,drr"], ["keep it"]),
        (["--no-run-dir"], ["give --run-dir for your own manifest"]),
    ],
)
def test_train_refuses_in_one_line(argv, words, manifest, tmp_path, capsys):
    run = ["--run-dir", tmp_path / "run"] if argv != ["--no-run-dir"] else []
    extra = [a for a in argv if a != "--no-run-dir"]
    rc = main(_train("--manifest", manifest, *run, *extra))
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "run").exists()


LAUNCHER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import xr2ct_lib.config as config
    from tiny_run import PROFILE
    config.PROFILES["smoke"] = PROFILE
    from xr2ct_lib.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_two_cpu_processes_under_accelerate_launch(manifest, trained, tmp_path, capsys):
    """`accelerate launch --multi_gpu --num_processes 2 ... train` on CPU (gloo) writes the
    bundle, and its checkpoints record the two processes (a resume with another number is
    refused at the stage level: tests/test_diffusion_train.py)."""
    launcher = tmp_path / "xr2ct_tiny.py"
    launcher.write_text(LAUNCHER.format(tests=str(TESTS)))
    run = tmp_path / "run"
    shutil.copytree(trained / "prepared", run / "prepared")  # the cohort is not what is tested
    env = {**os.environ, "XR2CT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"),
        *("--num_processes", "2", "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", str(launcher)),
        *_train("--manifest", manifest, "--run-dir", run),
    ]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "batch 2, 2 processes" in res.stdout and res.stdout.count("[plan]") == 1  # rank 0
    bundle = run / "bundle"
    prov = json.loads((bundle / "provenance.json").read_text())
    assert prov["schedule"]["diffusion"] == [2, 0, 3]
    ckpt = next((run / "models" / "diffusion").iterdir()) / "cxr"
    last = json.loads((ckpt / (ckpt / "LATEST").read_text().strip() / "config.json").read_text())
    assert last["num_processes"] == 2 and last["step"] == 3

    # rerun in this process (one process, another thread count): refused in one line, not
    # trained afresh under a new recipe (re-encoding the latents under another thread count
    # used to change the normaliser's last bits, hence the recipe key)
    weights = _sha(bundle / "denoiser" / "model.safetensors")
    capsys.readouterr()
    assert main(_train("--manifest", manifest, "--run-dir", run)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "a run resumes only with the number of processes that wrote its checkpoints" in err
    assert "written by 2 process(es)" in err and "--num_processes 2" in err
    assert len(list((run / "models" / "diffusion").iterdir())) == 1  # no second recipe
    assert _sha(bundle / "denoiser" / "model.safetensors") == weights

    shutil.rmtree(run)


def _launch(launcher: Path, run: Path, manifest: Path, kill_when=None) -> tuple[int, str]:
    """``xr2ct train`` in a subprocess; SIGKILL it as soon as ``kill_when(lines)`` is True."""
    # the thread count of the in-process run it is compared with: float sums differ across counts
    env = {**os.environ, "XR2CT_NO_PROGRESS": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, str(launcher), *_train("--manifest", manifest, "--run-dir", run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while kill_when is not None and proc.poll() is None:
        if kill_when(lines):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=900)
    reader.join(timeout=60)
    return proc.returncode, "".join(lines)


def test_train_killed_anywhere_resumes_to_the_uninterrupted_bundle(manifest, trained, tmp_path):
    """SIGKILL at a random moment of the VAE/encoder part, then inside the diffusion stages
    (as soon as a checkpoint pointer exists), then the same command once more: the bundle's
    weights are bit-identical to an uninterrupted run's."""
    from safetensors.torch import load_file

    launcher = tmp_path / "xr2ct_tiny.py"
    launcher.write_text(LAUNCHER.format(tests=str(TESTS)))
    run = tmp_path / "run"
    shutil.copytree(trained / "prepared", run / "prepared")  # the cohort is not what is tested
    delay = random.Random(0).uniform(0.0, 0.02)  # the tiny VAE/encoder part is quick
    seen: list[float] = []

    def in_vae_or_encoder(lines) -> bool:  # a random moment after the cohort was read
        if not seen and any("[cohort]" in ln for ln in lines):
            seen.append(time.perf_counter())
        return bool(seen) and time.perf_counter() - seen[0] >= delay

    def in_diffusion(lines) -> bool:
        return any(run.glob("models/diffusion/*/*/LATEST"))

    for kill_when, part in ((in_vae_or_encoder, "vae/encoder"), (in_diffusion, "diffusion")):
        rc, log = _launch(launcher, run, manifest, kill_when)
        assert rc == -signal.SIGKILL, (part, rc, log[-3000:])
        assert not (run / "bundle").exists(), part
        if part == "vae/encoder":
            assert "[diffusion]" not in log, log
    rc, log = _launch(launcher, run, manifest)
    assert rc == 0, log[-3000:]
    for part in ("denoiser", "vae", "encoder"):
        a = load_file(str(trained / "bundle" / part / "model.safetensors"))
        b = load_file(str(run / "bundle" / part / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    norm = [(r / "bundle" / "normalizer.json").read_text() for r in (trained, run)]
    assert norm[0] == norm[1]


def test_parse_steps_takes_three_counts():
    from xr2ct_lib.cli.train_commands import parse_steps

    assert parse_steps("300,0,1600") == (300, 0, 1600)
    for bad in ("1,2", "1,-2,3", "a,b,c", ""):
        with pytest.raises(ValueError, match="--diffusion-steps"):
            parse_steps(bad)
