"""What xr2ct refuses, and why (README, "Bring your own cohort"): inputs that used to lose
data, write outside their folder, reuse a stale volume or report garbage as success. Each
runs the real command on real files (a small cohort in a real cohort's formats, copies of
the shipped smoke bundle) and checks the one-line error and that nothing was written.
"""

from __future__ import annotations

import json
import shutil
import struct
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from real_cohort import write_cohort, write_manifest

from xr2ct_lib.cli import main
from xr2ct_lib.config import PROFILES, WEIGHTS_DIR
from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline

SHIPPED = WEIGHTS_DIR / "smoke"
needs_bundle = pytest.mark.skipif(not SHIPPED.is_dir(), reason="weights/smoke not here")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("XR2CT_NO_PROGRESS", "1")
    monkeypatch.delenv("XR2CT_DEBUG", raising=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Six patients in a real cohort's formats and their manifest."""
    folder = tmp_path_factory.mktemp("cohort")
    return write_manifest(write_cohort(folder, n=6), folder / "manifest.csv")


def _xray(path: Path, phase: float = 0.0) -> Path:
    yy, xx = np.mgrid[0:80, 0:70]
    img = 120 + 90 * np.sin(yy / 7 + phase) * np.cos(xx / 5)
    Image.fromarray(img.astype(np.uint8)).save(path)
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([*map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def _one_line(err: str, command: str, *words) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"xr2ct {command}: error: "), lines[0]
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    return lines[0]


def _bundle(tmp_path: Path, name: str = "bundle") -> Path:
    b = tmp_path / name
    shutil.copytree(SHIPPED, b)
    return b


# ------------------------------------------------------------ 2. ids that are not names
@pytest.mark.parametrize(
    "pid, words",
    [
        ("../ct/P05", ["unsafe patient_id '../ct/P05'", "letters, digits"]),
        ("/tmp/P05", ["unsafe patient_id '/tmp/P05'"]),
        ("=cmd|calc", ["unsafe patient_id '=cmd|calc'"]),
        ("r1", ["duplicate patient (first in row 2, in another case"]),
    ],
)
def test_a_patient_id_must_be_a_safe_file_name(pid, words, cohort, tmp_path, capsys, loads):
    df = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    df.loc[3, ["patient_id", "fold"]] = pid, df.loc[1, "fold"]
    bad = write_manifest(df, cohort.parent / f"bad-{tmp_path.name}.csv")
    rc, out, err = _run(capsys, "validate-manifest", bad)
    assert rc == 1
    line = next(ln for ln in out.splitlines() if "patient_id" in ln and "column=patient_id" in ln)
    assert f"{bad}: row 4 (line 5) patient_id={pid!r} column=patient_id" in line
    for w in words:
        assert w in line, (w, line)
    if SHIPPED.is_dir():  # generate checks the ids too, before loading anything
        gen = tmp_path / "gen" / "out"
        rc, _, err = _run(capsys, "generate", "--quiet", "--manifest", bad, "--bundle", SHIPPED,
                          "--out-dir", gen)  # fmt: skip
        assert rc == 1 and not loads and not (tmp_path / "gen").exists()
        _one_line(err, "generate", f"{bad} row 4", "patient_id")


def test_every_writer_refuses_a_target_outside_its_folder(tmp_path):
    from xr2ct_lib.files import FileError, inside

    assert inside(tmp_path, "P01.nii.gz") == tmp_path / "P01.nii.gz"
    for name in ("../ct/P05.nii.gz", "/etc/P05.nii.gz", "..", "."):
        with pytest.raises(FileError, match="would write outside"):
            inside(tmp_path, name)


# -------------------------------------------------- 3. a stale volume is not reused
@needs_bundle
def test_a_cohort_rerun_regenerates_changed_xrays_and_damaged_volumes(tmp_path, capsys):
    folder = tmp_path / "xrays"
    folder.mkdir()
    for i in range(3):
        _xray(folder / f"P{i}.png", phase=i)
    out = tmp_path / "out"
    argv = ("generate", "--quiet", "--cxr-dir", folder, "--bundle", SHIPPED, "--out-dir", out)
    assert _run(capsys, *argv)[0] == 0
    first = pd.read_csv(out / "index.csv", dtype={"patient_id": str})
    assert first["cxr_sha256"].str.len().eq(64).all()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    _xray(folder / "P0.png", phase=7.0)  # another X-ray under the same name
    (out / "P1.nii.gz").write_bytes((out / "P1.nii.gz").read_bytes()[:200])  # truncated
    rc, stdout, _ = _run(capsys, *argv)
    assert rc == 0 and "wrote 2 volume(s)" in stdout and "(1 already there)" in stdout
    again = pd.read_csv(out / "index.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert again.loc["P0", "cxr_sha256"] != first.set_index("patient_id").loc["P0", "cxr_sha256"]
    assert (out / "P2.nii.gz").stat().st_mtime_ns == stamps["P2.nii.gz"]  # unchanged: kept
    from xr2ct_lib.data.io import read_ct

    assert read_ct(out / "P1.nii.gz").array.shape == (32, 32, 32)


# ------------------------------------------------------ 4. garbage is not a success
def _flip_weights(f: Path) -> None:
    """4 bytes of the first tensor's data set to 0xFF: still a valid safetensors file."""
    data = bytearray(f.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    data[start + 1000 : start + 1004] = b"\xff" * 4
    f.write_bytes(bytes(data))


@needs_bundle
def test_a_nan_volume_is_an_error_naming_the_bundle_or_the_option(tmp_path, capsys):
    xray = _xray(tmp_path / "x.png")
    bundle = _bundle(tmp_path)
    _flip_weights(bundle / "denoiser" / "model.safetensors")  # no sha256 recorded: sampled
    out = tmp_path / "o" / "v.nii.gz"
    rc, _, err = _run(capsys, "generate", "--quiet", "--cxr", xray, "--bundle", bundle,
                      "--out", out)  # fmt: skip
    assert rc == 1 and not out.exists()
    _one_line(err, "generate", bundle, "NaN or infinite", "weights are damaged", "nothing written")
    rc, _, err = _run(capsys, "generate", "--quiet", "--cxr", xray, "--bundle", SHIPPED,
                      "--out", out, "--guidance", "1e30")  # fmt: skip
    assert rc == 1 and not out.exists()
    _one_line(err, "generate", "NaN or infinite", "--guidance 1e+30 is too large")


@needs_bundle
def test_weights_sha256_are_recorded_and_checked_before_loading(tmp_path, capsys, loads):
    from xr2ct_lib.models import bundle as B

    pipe = XRay2CTPAPipeline.from_pretrained(SHIPPED)
    saved = pipe.save_pretrained(tmp_path / "b", provenance=B.read_provenance(SHIPPED))
    recorded = B.read_provenance(saved)[B.WEIGHTS_SHA256]
    assert sorted(recorded) == ["denoiser/model.safetensors", "encoder/model.safetensors",
                                "vae/model.safetensors"]  # fmt: skip
    loads.clear()
    _flip_weights(saved / "vae" / "model.safetensors")
    out = tmp_path / "v.nii.gz"
    rc, _, err = _run(capsys, "generate", "--quiet", "--cxr", _xray(tmp_path / "x.png"),
                      "--bundle", saved, "--out", out)  # fmt: skip
    assert rc == 1 and not out.exists() and not loads
    _one_line(err, "generate", saved / "vae" / "model.safetensors", "sha256 differs")


# ------------------------------------------------------- 5. an encoder without weights
@needs_bundle
@pytest.mark.parametrize("source", ["ViT-B-16", "weights-folder"])
def test_an_encoder_without_weights_is_refused(source, tmp_path, capsys):
    bundle = _bundle(tmp_path)
    if source == "weights-folder":  # an open_clip folder with a config and no weights
        (tmp_path / source).mkdir()
        (tmp_path / source / "open_clip_config.json").write_text("{}")
        source = str(tmp_path / source)
    (bundle / "encoder" / "config.json").write_text(json.dumps({"kind": "open_clip",
                                                                "source": source}))  # fmt: skip
    out = tmp_path / "v.nii.gz"
    rc, _, err = _run(capsys, "generate", "--quiet", "--cxr", _xray(tmp_path / "x.png"),
                      "--bundle", bundle, "--out", out)  # fmt: skip
    assert rc == 1 and not out.exists()
    _one_line(err, "generate", "randomly initialised", bundle / "encoder" / "config.json")


# ---------------------------------------------- 8. one source of sampling defaults
@needs_bundle
def test_sampling_defaults_are_the_profiles_whatever_the_bundle_file_says(tmp_path, capsys):
    from xr2ct_lib.generation.volume import check_bundle_for_generation, check_sampling

    bundle = _bundle(tmp_path)
    p = json.loads((bundle / "profile.json").read_text())
    p.update(sample_steps_fast=50, sampler="dpm++")  # as weights/workshop's file said
    (bundle / "profile.json").write_text(json.dumps(p))
    _, profile, timesteps = check_bundle_for_generation(bundle)
    smoke = PROFILES["smoke"]
    defaults = check_sampling(profile, timesteps, None, None, 1.0)
    assert defaults == (smoke.sampler, smoke.sample_steps_fast)
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"smoke: {smoke.sampler} {smoke.sample_steps_fast}" in help_text


# --------------------------------------------------- 9. configs of the wrong type
def _set_config(part: str, field: str, value):
    def damage(b: Path) -> Path:
        f = b / part
        cfg = json.loads(f.read_text())
        (cfg["autoencoder"] if part == "vae/config.json" else cfg)[field] = value
        f.write_text(json.dumps(cfg))
        return f

    return damage


WRONG_TYPES = {
    "in_channels 8.0": ("denoiser/config.json", "in_channels", 8.0, "a whole number ≥ 1", "8.0"),
    "attention_head_dim '32'": ("denoiser/config.json", "attention_head_dim", "32",
                                "a whole number ≥ 1", '"32"'),
    "conv_kernel 3": ("denoiser/config.json", "conv_kernel", 3, "a list of 3 whole numbers", "3"),
    "channels '16,32'": ("denoiser/config.json", "channels", "16,32", "a list of whole",
                         '"16,32"'),
    "num_train_timesteps '1000'": ("scheduler/scheduler_config.json", "num_train_timesteps",
                                   "1000", "a whole number ≥ 1", '"1000"'),
    "latent_channels 4.5": ("vae/config.json", "latent_channels", 4.5, "a whole number", "4.5"),
}  # fmt: skip


@needs_bundle
@pytest.mark.parametrize("fault", list(WRONG_TYPES))
def test_a_config_of_the_wrong_type_names_file_field_expected_and_found(
    fault, tmp_path, capsys, loads
):
    part, field, value, expected, found = WRONG_TYPES[fault]
    bundle = _bundle(tmp_path)
    _set_config(part, field, value)(bundle)
    out = tmp_path / "v.nii.gz"
    rc, _, err = _run(capsys, "generate", "--quiet", "--cxr", _xray(tmp_path / "x.png"),
                      "--bundle", bundle, "--out", out)  # fmt: skip
    assert rc == 1 and not out.exists() and not loads
    _one_line(err, "generate", bundle / part, f"{field}: expected {expected}", f"found {found}")


# ------------------------------------------------ 1. train --out never destroys data
def _out_cases(tmp_path: Path) -> dict:
    """name: (--out, what must survive, words of the message)."""
    from xr2ct_lib.config import REPO_ROOT

    run = tmp_path / "runs" / "mine"
    (run / "prepared").mkdir(parents=True)
    (run / "prepared" / "P01.safetensors").write_text("prepared tensors")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("a user's file")
    (tmp_path / "a_file").write_text("x")
    cases = {
        "a folder of user files (--out .)": (".", user / "notes.txt", ["not an xr2ct bundle",
                                                                       "notes.txt"]),
        "the run dir": (run, run / "prepared" / "P01.safetensors", ["the work folder"]),
        "a parent of the run dir": (tmp_path / "runs", run / "prepared" / "P01.safetensors",
                                    ["the work folder"]),
        "the checkout": (REPO_ROOT, REPO_ROOT / "README.md", ["the checkout"]),
        "a file": (tmp_path / "a_file", tmp_path / "a_file", ["is a file"]),
    }  # fmt: skip
    if SHIPPED.is_dir():
        other = _bundle(tmp_path, "other_bundle")
        cases["the shipped bundle, own manifest"] = (SHIPPED, SHIPPED / "provenance.json",
                                                     ["the shipped bundles"])  # fmt: skip
        cases["a bundle of another request"] = (other, other / "provenance.json",
                                                ["another request", "manifest_sha256",
                                                 "--overwrite"])  # fmt: skip
    return cases


OUT_CASES = [
    "a folder of user files (--out .)",
    "the run dir",
    "a parent of the run dir",
    "the checkout",
    "a file",
    "the shipped bundle, own manifest",
    "a bundle of another request",
]


@pytest.mark.parametrize("case", OUT_CASES)
def test_train_refuses_an_out_it_would_destroy(case, cohort, tmp_path, capsys, monkeypatch):
    cases = _out_cases(tmp_path)
    if case not in cases:
        pytest.skip("weights/smoke not here")
    out, survivor, words = cases[case]
    monkeypatch.chdir(tmp_path / "mine")
    before = survivor.read_bytes()
    run = tmp_path / "runs" / "mine"
    rc, _, err = _run(capsys, "train", "--profile", "smoke", "--manifest", cohort,
                      "--run-dir", run, "--out", out)  # fmt: skip
    assert rc == 1
    _one_line(err, "train", "--out", *words)
    assert survivor.read_bytes() == before and not (run / "train.lock").exists()


def test_overwrite_replaces_only_a_bundle(tmp_path):
    from xr2ct_lib.config import load_config
    from xr2ct_lib.files import FileError
    from xr2ct_lib.train.bundle import check_out, training_request

    cfg = load_config("smoke", None, tmp_path / "run", 0)
    request = training_request(cfg, "long", "joint", None, None, True)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "thesis.tex").write_text("x")
    with pytest.raises(FileError, match="not an xr2ct bundle"):
        check_out(tmp_path / "user", cfg.run_dir, request, True, overwrite=True)
    if SHIPPED.is_dir():
        other = _bundle(tmp_path, "other")
        request["seed"] = 1
        with pytest.raises(FileError, match="seed 0 → 1"):
            check_out(other, cfg.run_dir, request, True, overwrite=False)
        check_out(other, cfg.run_dir, request, True, overwrite=True)


# ------------------------------------------------- 6. one training per run dir at a time
def test_a_second_train_in_one_run_dir_is_refused_naming_the_first(cohort, tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys

    from xr2ct_lib.train.bundle import run_lock

    run = tmp_path / "run"
    script = textwrap.dedent("""
        import os, sys, time
        from pathlib import Path
        from xr2ct_lib.train.bundle import run_lock
        with run_lock(Path(sys.argv[1])):
            worker = os.fork()  # as prepare's pool does: it inherits the open lock file
            if worker == 0:
                time.sleep(600)
                os._exit(0)
            print(worker, flush=True)
            time.sleep(600)
    """)  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", script, str(run)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    worker = int(holder.stdout.readline())
    try:
        rc, _, err = _run(capsys, "train", "--profile", "smoke", "--manifest", cohort,
                          "--run-dir", run)  # fmt: skip
        assert rc == 1
        _one_line(err, "train", str(run), f"pid {holder.pid}", "another `xr2ct train`")
        assert sorted(p.name for p in run.iterdir()) == ["train.lock"]  # nothing else written
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with run_lock(run) as lock:  # a killed holder leaves nothing stuck, its worker alive
            assert lock.read_text().strip() == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()
        os.kill(worker, signal.SIGKILL)


# --------------------------------------------- 7. the smoke profile says what it drops
def test_a_capped_profile_says_how_many_patients_it_keeps(cohort, tmp_path, capsys, monkeypatch):
    import dataclasses

    from tiny_run import PROFILE

    import xr2ct_lib.config as config

    monkeypatch.setitem(config.PROFILES, "smoke", dataclasses.replace(PROFILE, max_patients=6))
    df = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    big = pd.concat([df] * 3, ignore_index=True)  # 18 rows, 3 per fold, the same images
    big["patient_id"] = [f"A{i:02d}" for i in range(len(big))]
    big["fold"] = [str(i % 6) for i in range(len(big))]
    manifest = write_manifest(big, cohort.parent / "eighteen.csv")
    rc, out, err = _run(capsys, "prepare", "--profile", "smoke", "--manifest", manifest,
                        "--run-dir", tmp_path / "run", "--workers", "1")  # fmt: skip
    assert rc == 0, err
    assert f"{manifest}: profile smoke keeps 9 of its 18 patients (max_patients 6" in err
    assert "prepared 9 patients of the manifest's 18 (max_patients 6)" in out


# ------------------------------------------- 10. smaller ones: one clear line each
@pytest.mark.parametrize(
    "argv, words",
    [
        (["generate", "--quiet", "--cxr", "x.png", "--out", "", "--bundle", "b"],
         ["--out is empty"]),
        (["train", "--manifest", "M", "--run-dir", "r", "--diffusion-steps", "0,0,0"],
         ["--diffusion-steps 0,0,0", "at least 1 step"]),
    ],
)  # fmt: skip
def test_an_empty_path_and_no_cxr_steps_are_one_line(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(capsys, *argv)
    assert rc == 1
    _one_line(err, argv[0], *words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, words",
    [
        (["generate", "--bundle", "b", "--seed", "1" * 20], ["--seed", "from 0 to 4294967295"]),
        (["train", "--ckpt-every", "0"], ["--ckpt-every", "'0'", "≥ 1"]),
        (["train", "--ckpt-every", "-5"], ["--ckpt-every", "'-5'", "≥ 1"]),
    ],
)
def test_out_of_range_numbers_are_refused_by_the_parser(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and err.startswith(f"xr2ct {argv[0]}: error: argument")
    for w in words:
        assert w in err, (w, err)


def test_validate_manifest_catches_what_later_steps_would_reject(cohort, tmp_path, capsys):
    """A 2×2 X-ray and a 4×4×4 CT; a DICOM X-ray named without .dcm is read; a misspelt
    optional column is warned about; a 10 MB field is one line naming the file."""
    from real_cohort import chest, write_volume, write_xray_dicom

    d = cohort.parent
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).save(d / "tiny.png")
    write_volume(d / "tiny_ct.nii.gz", np.full((4, 4, 4), -1000, np.int16))
    write_xray_dicom(d / "IMG0001", chest()[0])
    write_xray_dicom(d / "x.dicom", chest()[0])
    df = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    df.loc[0, "cxr_path"], df.loc[1, "ct_path"] = "tiny.png", "tiny_ct.nii.gz"
    df.loc[1, "label_path"] = ""
    df.loc[2, "cxr_path"], df.loc[3, "cxr_path"] = "IMG0001", "x.dicom"
    df["clot_pth"] = ""
    bad = write_manifest(df, d / f"small-{tmp_path.name}.csv")
    rc, out, err = _run(capsys, "validate-manifest", bad)
    assert rc == 1
    lines = out.strip().splitlines()
    assert len(lines) == 2, lines  # the two DICOM files without .dcm are fine
    assert "row 1 (line 2)" in lines[0] and "2×2 pixels is too small" in lines[0]
    assert "row 2 (line 3)" in lines[1] and "4×4×4 voxels is too small for a CT" in lines[1]
    assert "column 'clot_pth' is not one xr2ct reads (a typo of 'clot_path'?)" in err

    huge = d / f"huge-{tmp_path.name}.csv"
    huge.write_text(cohort.read_text() + "R9,0,0,x," + "a" * 10_000_000 + ",c.png\n")
    rc, out, err = _run(capsys, "validate-manifest", huge)
    assert rc == 1 and len(out.strip().splitlines()) == 1
    assert f"{huge}: line 8: field larger than field limit" in out


@needs_bundle
def test_a_bad_xray_in_a_folder_is_named_once(tmp_path, capsys):
    folder = tmp_path / "xrays"
    folder.mkdir()
    (folder / "PH0005.png").write_bytes(b"not a png")
    rc, _, err = _run(capsys, "generate", "--quiet", "--cxr-dir", folder, "--bundle", SHIPPED,
                      "--out-dir", tmp_path / "out")  # fmt: skip
    assert rc == 1
    line = _one_line(err, "generate", folder / "PH0005.png", "cannot read")
    assert line.count("PH0005.png") == 1, line


def _with_spacing(src: Path, dst: Path, spacing: list[float], no_qform: bool) -> str:
    """A copy of a NIfTI CT whose header says ``spacing`` (pixdim[1..3]), optionally without
    qform/sform (as some exporters write it)."""
    import gzip

    data = bytearray(gzip.decompress(src.read_bytes()))
    struct.pack_into("<3f", data, 80, *spacing)
    if no_qform:
        struct.pack_into("<hh", data, 252, 0, 0)
    dst.write_bytes(gzip.compress(bytes(data)))
    return dst.name


def test_a_ct_with_a_broken_spacing_is_named(cohort, tmp_path, capsys):
    d = cohort.parent
    df = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    df.loc[0, "ct_path"] = _with_spacing(d / "R0_ct.nii.gz", d / "nan_ct.nii.gz",
                                         [float("nan"), 3, 3], no_qform=False)  # fmt: skip
    df.loc[1, "ct_path"] = _with_spacing(d / "R1_ct.nii.gz", d / "zero_ct.nii.gz", [0, 0, 0],
                                         no_qform=True)  # fmt: skip
    df.loc[[0, 1], "label_path"] = ""
    bad = write_manifest(df, d / f"spacing-{tmp_path.name}.csv")
    rc, out, err = _run(capsys, "validate-manifest", bad)
    assert rc == 1 and "pixdim[1,2,3] should be non-zero" not in err
    lines = out.strip().splitlines()
    assert len(lines) == 2, lines
    assert "row 1" in lines[0] and "nan_ct.nii.gz: voxel spacing [nan, 3.0, 3.0] mm" in lines[0]
    assert "row 2" in lines[1] and "zero_ct.nii.gz: voxel spacing [0.0, 0.0, 0.0] mm" in lines[1]


@needs_bundle
def test_a_folder_with_two_xrays_of_one_name_in_two_cases_is_refused(tmp_path, capsys, loads):
    folder = tmp_path / "xrays"
    folder.mkdir()
    _xray(folder / "P01.png")
    _xray(folder / "p01.png", phase=1.0)
    rc, _, err = _run(capsys, "generate", "--quiet", "--cxr-dir", folder, "--bundle", SHIPPED,
                      "--out-dir", tmp_path / "out")  # fmt: skip
    assert rc == 1 and not loads and not (tmp_path / "out").exists()
    _one_line(err, "generate", "p01.png", "has two X-rays (P01.png too)")
