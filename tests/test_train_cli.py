"""``xr2ct train`` on a user's cohort (real formats, no DRRs), then ``xr2ct generate`` on it;
under ``accelerate launch`` with two CPU processes; and its refusals (one line, exit 1).

The profile is a tiny ``smoke`` (``tests/tiny_run.PROFILE``) put in place of the real one,
in this process (monkeypatch) and in the launched ones (a two-line launcher script).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
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


def _train(*extra) -> list[str]:
    return ["train", "--profile", "smoke", "--ckpt-every", "1", *map(str, extra)]


def _sha(f: Path) -> str:
    return hashlib.sha256(f.read_bytes()).hexdigest()


def test_train_resume_and_generate_a_cohort_without_drrs(manifest, tmp_path, capsys):
    run = tmp_path / "runs" / "mine"
    rc = main(_train("--manifest", manifest, "--run-dir", run, "--stages", "uncond,drr,cxr"))
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    line = err.strip().splitlines()[-1]
    assert str(manifest) in line and "no patient has a DRR" in line
    assert "--stages uncond,cxr" in line and not (run / "models").exists()  # before the VAE

    rc = main(_train("--manifest", manifest, "--run-dir", run))  # --stages auto
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "[diffusion] stages uncond, cxr: (2, 0, 3) steps" in out
    bundle = run / "bundle"  # not weights/smoke: a user's own cohort
    prov = json.loads((bundle / "provenance.json").read_text())
    assert prov["schedule"]["diffusion"] == [2, 0, 3]
    assert prov["cohort"]["simulated"] is False and prov["cohort"]["train_patients"] == 4
    curve = pd.read_csv(bundle / "loss_curve.csv")
    assert curve.groupby("part").size().to_dict() == {"vae": 4, "encoder": 4, "uncond": 2,
                                                      "cxr": 3}  # fmt: skip
    weights = _sha(bundle / "denoiser" / "model.safetensors")
    rc = main(_train("--manifest", manifest, "--run-dir", run))  # again: everything reused
    assert rc == 0 and _sha(bundle / "denoiser" / "model.safetensors") == weights
    capsys.readouterr()

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


def test_two_cpu_processes_under_accelerate_launch(manifest, tmp_path, capsys):
    """`accelerate launch --multi_gpu --num_processes 2 ... train` on CPU (gloo), then a
    resume with one process is refused in one line."""
    launcher = tmp_path / "xr2ct_tiny.py"
    launcher.write_text(LAUNCHER.format(tests=str(TESTS)))
    run = tmp_path / "run"
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

    rc = main(_train("--manifest", manifest, "--run-dir", run))
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    assert "written by 2 process(es)" in err and "--num_processes" in err
    shutil.rmtree(run)
