"""``xr2ct generate`` on bad input: one line naming the file or option, exit 1, nothing written,
and no network loaded (every check runs before the bundle's weights are read); offline by
default. Runs the real entry point on a copy of the shipped smoke bundle (``weights/smoke``);
and on a tiny run's own bundle: a NIfTI out, and a book volume reproduced bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import PROFILE

from xr2ct_lib.cli import main
from xr2ct_lib.config import WEIGHTS_DIR
from xr2ct_lib.eval.generated import load_generated
from xr2ct_lib.generation import cache, load
from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline

SHIPPED = WEIGHTS_DIR / "smoke"
pytestmark = pytest.mark.skipif(not SHIPPED.is_dir(), reason="weights/smoke not in this checkout")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("XR2CT_NO_PROGRESS", "1")
    monkeypatch.delenv("XR2CT_DEBUG", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture(scope="module")
def xray(tmp_path_factory) -> Path:
    yy, xx = np.mgrid[0:80, 0:70]
    path = tmp_path_factory.mktemp("xray") / "chest.png"
    Image.fromarray((120 + 90 * np.sin(yy / 7) * np.cos(xx / 5)).astype(np.uint8)).save(path)
    return path


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main(["generate", "--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, err


def _one_line(err: str, *words) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("xr2ct generate: error: "), lines[0]
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    return lines[0]


def _files(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


# -------------------------------------------------------------------- bad arguments
BAD_ARGS = {
    # name: (extra arguments, out name, words of the message)
    "zero steps": (["--steps", "0"], "v.nii.gz", ["--steps 0", "between 1 and 1000"]),
    "negative steps": (["--steps", "-3"], "v.nii.gz", ["--steps -3", "between 1 and 1000"]),
    "too many steps": (["--steps", "5000", "--sampler", "ddpm"], "v.nii.gz", ["--steps 5000"]),
    "NaN guidance": (["--guidance", "nan"], "v.nii.gz", ["--guidance nan", "finite"]),
    "PNG out": ([], "v.png", ["v.png", "written as NIfTI", ".nii.gz"]),
    "folder out": ([], "adir", ["adir", "is a folder"]),
    "out under a file": ([], "afile/v.nii.gz", ["afile is a file"]),
    "unknown device": (["--device", "tpu:9"], "v.nii.gz", ["--device tpu:9"]),
    "both kinds": (["--cxr-dir", "."], "v.nii.gz", ["--cxr/--out generate one X-ray"]),
}
if not torch.cuda.is_available():
    BAD_ARGS["no GPU"] = (["--device", "cuda"], "v.nii.gz", ["--device cuda", "no CUDA GPU"])


@pytest.mark.parametrize("fault", list(BAD_ARGS))
def test_bad_argument_fails_before_loading(fault, xray, tmp_path, capsys, loads):
    extra, out_name, words = BAD_ARGS[fault]
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    before = _files(tmp_path)
    rc, err = _run(capsys, "--cxr", xray, "--checkpoint", SHIPPED, "--out",
                   tmp_path / out_name, *extra)  # fmt: skip
    assert rc == 1
    _one_line(err, *words)
    assert _files(tmp_path) == before and not loads


def test_missing_and_unreadable_xray_are_named(tmp_path, capsys, loads):
    rc, err = _run(capsys, "--cxr", tmp_path / "absent.png", "--checkpoint", SHIPPED,
                   "--out", tmp_path / "v.nii.gz")  # fmt: skip
    assert rc == 1
    _one_line(err, tmp_path / "absent.png", "does not exist")
    (tmp_path / "fake.png").write_bytes(b"not an image")
    rc, err = _run(capsys, "--cxr", tmp_path / "fake.png", "--checkpoint", SHIPPED,
                   "--out", tmp_path / "v.nii.gz")  # fmt: skip
    assert rc == 1
    _one_line(err, tmp_path / "fake.png", "cannot read")
    rc, err = _run(capsys, "--cxr", tmp_path / "fake.png", "--checkpoint", SHIPPED)
    assert rc == 1
    _one_line(err, "give --cxr FILE --out FILE.nii.gz")
    assert not loads and not (tmp_path / "v.nii.gz").exists()


# ---------------------------------------------------------------------- bad bundles
def _profile(edit):
    def damage(b: Path) -> None:
        p = json.loads((b / "profile.json").read_text())
        edit(p)
        (b / "profile.json").write_text(json.dumps(p))

    return damage


def _truncate(part: str, keep: float):
    def damage(b: Path) -> None:
        f = b / part / "model.safetensors"
        data = f.read_bytes()
        f.write_bytes(data[: int(len(data) * keep)])

    return damage


def _write(name: str, text: str):
    def damage(b: Path) -> None:
        (b / name).write_text(text)

    return damage


BAD_BUNDLES = {
    # name: (damage, file named, words of the message)
    "profile says another size": (
        _profile(lambda p: p.update(ct_size=[64, 64, 64])),
        "profile.json",
        ["does not describe the bundle's weights", "ct_size height 64", "sample_size 32"],
    ),
    "profile says another U-Net": (
        _profile(lambda p: p.update(unet_channels=[8, 16])),
        "profile.json",
        ["unet_channels (8, 16)", "denoiser/config.json has channels [16, 32]"],
    ),
    "profile without a size": (
        _profile(lambda p: p.pop("ct_size")),
        "profile.json",
        ["missing profile field(s) ct_size"],
    ),
    "broken profile.json": (
        _write("profile.json", '{"name": "smoke", "ct_si'),
        "profile.json",
        ["not valid JSON"],
    ),
    "truncated denoiser weights": (
        _truncate("denoiser", 0.5),
        "denoiser/model.safetensors",
        ["not a complete safetensors file", "truncated"],
    ),
    "truncated VAE header": (
        _truncate("vae", 0.0001),
        "vae/model.safetensors",
        ["not a complete safetensors file"],
    ),
    "broken encoder config": (
        _write("encoder/config.json", "{"),
        "encoder/config.json",
        ["not valid JSON"],
    ),
    "no provenance": (
        lambda b: (b / "provenance.json").unlink(),
        "",
        ["has no provenance.json", "make weights"],
    ),
}


@pytest.mark.parametrize("fault", list(BAD_BUNDLES))
def test_bad_bundle_is_named_before_sampling(fault, xray, tmp_path, capsys, monkeypatch):
    damage, named, words = BAD_BUNDLES[fault]
    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED, bundle)
    damage(bundle)
    sampled = []
    monkeypatch.setattr(XRay2CTPAPipeline, "denoise", lambda *a, **k: sampled.append(1))
    out = tmp_path / "out" / "v.nii.gz"
    rc, err = _run(capsys, "--cxr", xray, "--checkpoint", bundle, "--out", out)
    assert rc == 1
    _one_line(err, bundle / named if named else bundle.name, *words)
    assert not sampled and not (tmp_path / "out").exists()


# -------------------------------------------------------------------- offline loading
def _no_network(monkeypatch) -> list:
    """Every attempt to resolve a host name or connect is recorded, and fails."""
    import socket

    calls = []

    def refuse(*a, **k):
        calls.append(a)
        raise OSError("network use in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return calls


def test_a_hub_encoder_not_in_the_cache_fails_fast_without_network(
    xray, tmp_path, capsys, monkeypatch
):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED, bundle)
    source = {"kind": "open_clip", "source": "hf-hub:someone/chest-clip"}
    (bundle / "encoder" / "config.json").write_text(json.dumps(source))
    calls = _no_network(monkeypatch)
    rc, err = _run(capsys, "--cxr", xray, "--checkpoint", bundle, "--out", tmp_path / "v.nii.gz")
    assert rc == 1 and not calls  # the hub was never asked (it was: ~27 s of retries)
    line = _one_line(
        err,
        "someone/chest-clip",
        bundle / "encoder" / "config.json",
        "not in the local Hugging Face cache",
        "HF_HUB_OFFLINE=1",
        "--allow-download",
    )
    assert "BiomedCLIP" not in line and not (tmp_path / "v.nii.gz").exists()


def test_a_hub_encoder_in_the_local_cache_is_used(xray, tmp_path, capsys, monkeypatch):
    """A cached hub model loads with no network (the cache layout of huggingface_hub)."""
    import huggingface_hub.constants as hc
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    model_cfg = {"embed_dim": 512,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16,
                                "head_width": 32},
                 "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2,
                              "layers": 1}}  # fmt: skip
    cache = tmp_path / "hub"
    repo = cache / "models--someone--chest-clip"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snap / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in CLIP(**model_cfg).state_dict().items()}
    save_file(state, str(snap / "open_clip_model.safetensors"))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED, bundle)
    source = {"kind": "open_clip", "source": "hf-hub:someone/chest-clip"}
    (bundle / "encoder" / "config.json").write_text(json.dumps(source))
    out = tmp_path / "v.nii.gz"
    calls = _no_network(monkeypatch)
    rc, err = _run(capsys, "--cxr", xray, "--checkpoint", bundle, "--out", out)
    assert rc == 0 and not calls, err
    from xr2ct_lib.data.io import read_ct

    assert read_ct(out).array.shape == (32, 32, 32)


# ------------------------------------------------------------------------ a cohort
@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Three patients in a real cohort's formats, and their manifest."""
    from real_cohort import write_cohort, write_manifest

    folder = tmp_path_factory.mktemp("cohort")
    return write_manifest(write_cohort(folder, n=3), folder / "manifest.csv")


def test_a_cohort_from_a_manifest_then_skipped_then_reseeded(cohort, tmp_path, capsys):
    import pandas as pd

    from xr2ct_lib.data.io import read_ct
    from xr2ct_lib.generation.pipeline import noise_seed

    out = tmp_path / "generated"
    rc = main(["generate", "--manifest", str(cohort), "--checkpoint", str(SHIPPED),
               "--out-dir", str(out), "--seed", "2"])  # fmt: skip
    _, err = capsys.readouterr()
    assert rc == 0, err
    assert "loading the networks of weights/smoke" in err and "3 to go" in err  # start-up
    index = pd.read_csv(out / "index.csv", dtype={"patient_id": str})
    assert index.patient_id.tolist() == ["R0", "R1", "R2"]
    assert index.seed.tolist() == [noise_seed(2, i) for i in range(3)]
    assert (index.seconds > 0).all() and set(index.sampler) == {"ddim"}
    assert sorted(p.name for p in out.iterdir()) == ["R0.nii.gz", "R1.nii.gz", "R2.nii.gz",
                                                     "index.csv"]  # fmt: skip
    vols = {p: read_ct(out / f"{p}.nii.gz").array for p in ("R0", "R1", "R2")}
    assert vols["R0"].shape == (32, 32, 32) and not np.array_equal(vols["R0"], vols["R1"])
    # one X-ray with the patient's seed: the cohort's volume, bit for bit
    one = tmp_path / "R1.nii.gz"
    rc, err = _run(capsys, "--cxr", cohort.parent / "R1_cxr.png", "--checkpoint", SHIPPED,
                   "--out", one, "--seed", noise_seed(2, 1))  # fmt: skip
    assert rc == 0, err
    np.testing.assert_array_equal(read_ct(one).array, vols["R1"])
    # the same command again: nothing to do
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    rc = main(["generate", "--quiet", "--manifest", str(cohort), "--checkpoint", str(SHIPPED),
               "--out-dir", str(out), "--seed", "2"])  # fmt: skip
    assert rc == 0 and "wrote 0 volume(s)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == stamps
    again = pd.read_csv(out / "index.csv", dtype={"patient_id": str})
    pd.testing.assert_frame_equal(again, index)
    # a lost volume and another number of steps: generated again
    (out / "R2.nii.gz").unlink()
    rc, err = _run(capsys, "--manifest", cohort, "--checkpoint", SHIPPED, "--out-dir", out,
                   "--seed", "2", "--steps", "2")  # fmt: skip
    assert rc == 0, err
    index = pd.read_csv(out / "index.csv", dtype={"patient_id": str})
    assert index.steps.tolist() == [2, 2, 2] and len(index) == 3


def test_a_folder_of_xrays(cohort, tmp_path, capsys):
    import pandas as pd

    folder = tmp_path / "xrays"
    folder.mkdir()
    for i in (0, 2):
        shutil.copy(cohort.parent / f"R{i}_cxr.png", folder / f"patient {i}.png")
    (folder / "notes.txt").write_text("not an X-ray")
    out = tmp_path / "out"
    rc, err = _run(capsys, "--cxr-dir", folder, "--checkpoint", SHIPPED, "--out-dir", out)
    assert rc == 0, err
    index = pd.read_csv(out / "index.csv")
    assert index.patient_id.tolist() == ["patient 0", "patient 2"]
    assert (out / "patient 2.nii.gz").is_file() and len(list(out.iterdir())) == 3


def test_a_dicom_named_dicom_in_a_folder_is_generated(cohort, tmp_path, capsys):
    """``--cxr-dir`` lists ``.dicom`` and the reader reads it (it once listed it, then
    refused it: "unsupported X-ray format '.dicom'"), also without the DICOM preamble."""
    import pandas as pd
    import pydicom
    from real_cohort import write_xray_dicom

    from xr2ct_lib.data.io import read_ct

    folder = tmp_path / "xrays"
    folder.mkdir()
    write_xray_dicom(folder / "p1.dicom", read_ct(cohort.parent / "R0_ct.nii.gz").array)
    ds = pydicom.dcmread(folder / "p1.dicom")
    ds.preamble = None
    ds.save_as(folder / "p1.dicom", enforce_file_format=False)
    out = tmp_path / "out"
    rc, err = _run(capsys, "--cxr-dir", folder, "--checkpoint", SHIPPED, "--out-dir", out,
                   "--steps", "1")  # fmt: skip
    assert rc == 0, err
    assert pd.read_csv(out / "index.csv").patient_id.tolist() == ["p1"]
    assert (out / "p1.nii.gz").is_file()


def test_a_bad_xray_in_a_cohort_is_named_before_any_volume(cohort, tmp_path, capsys, loads):
    import pandas as pd

    df = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    (cohort.parent / "blank.png").write_bytes(b"")
    df.loc[2, "cxr_path"] = "blank.png"
    df.loc[0, "cxr_path"] = "absent.png"
    bad = cohort.parent / "bad.csv"
    df.to_csv(bad, index=False)
    out = tmp_path / "out"
    rc, err = _run(capsys, "--manifest", bad, "--checkpoint", SHIPPED, "--out-dir", out)
    assert rc == 1 and not loads and not out.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 2, lines  # one line per bad X-ray
    assert f"{bad} row 1 patient_id='R0' column=cxr_path" in lines[0] and "absent.png" in lines[0]
    assert f"{bad} row 3 patient_id='R2'" in lines[1] and "blank.png" in lines[1]
    rc, err = _run(capsys, "--manifest", bad, "--checkpoint", SHIPPED)
    assert rc == 1
    _one_line(err, "a cohort needs --out-dir")
    (tmp_path / "empty").mkdir()
    rc, err = _run(capsys, "--cxr-dir", tmp_path / "empty", "--checkpoint", SHIPPED,
                   "--out-dir", out)  # fmt: skip
    assert rc == 1
    _one_line(err, tmp_path / "empty", "no X-ray files")


def test_generate_cli_writes_nifti_and_rejects_bad_input(run, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    from xr2ct_lib.data.io import read_ct

    load.live_generator(run)
    img = (np.random.default_rng(1).random((40, 40)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    out = tmp_path / "ct.nii.gz"
    cmd = [sys.executable, "-m", "xr2ct_lib.cli", "generate", "--cxr", str(tmp_path / "x.png"),
           "--checkpoint", str(run.run_dir / "models" / "bundle"), "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    vol = read_ct(out)
    assert vol.shape == PROFILE.ct_size
    assert vol.spacing == pytest.approx((PROFILE.ct_spacing_mm,) * 3)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    cmd[cmd.index("--cxr") + 1] = str(tmp_path / "bad.png")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode != 0 and "bad.png" in (r.stdout + r.stderr)
    assert (
        json.loads((run.run_dir / "models" / "bundle" / "normalizer.json").read_text())["min"] < 0
    )


def test_xr2ct_generate_reproduces_a_book_volume_bit_for_bit(run, tmp_path):
    """Same bundle, same X-ray file, the seed the book recorded: the same volume, in HU."""
    import subprocess
    import sys

    from PIL import Image
    from safetensors.torch import load_file, save_file

    from xr2ct_lib.data.hu_window import PAPER_WINDOW
    from xr2ct_lib.data.io import read_ct
    from xr2ct_lib.data.preprocess import read_and_preprocess_cxr

    pipe, _ = load.live_generator(run)
    yy, xx = np.mgrid[0:60, 0:50]
    png = tmp_path / "P11_cxr.png"
    Image.fromarray((120 + 90 * np.sin(yy / 7) * np.cos(xx / 5)).astype(np.uint8)).save(png)
    # the patient's prepared X-ray is this file, preprocessed as `xr2ct prepare` does
    f = run.run_dir / "prepared" / "P11.safetensors"
    arrays = load_file(str(f))
    arrays["cxr"] = read_and_preprocess_cxr(png, PROFILE.cxr_size)
    save_file(arrays, str(f))
    t = cache.generate_patients(run, pipe, ["P11"], out_dir="generated_book", reuse=False)
    book = load_generated(run, "generated_book")["P11"]["ct"]
    out = tmp_path / "cli.nii.gz"
    cmd = [sys.executable, "-m", "xr2ct_lib.cli", "generate", "--cxr", str(png), "--checkpoint",
           str(run.run_dir / "models" / "bundle"), "--out", str(out),
           "--seed", str(int(t["seed"].iloc[0]))]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    cli = read_ct(out).array
    np.testing.assert_array_equal(cli, PAPER_WINDOW.to_hu(book))
    assert np.unique(cli).size > 100  # a volume, not a constant
