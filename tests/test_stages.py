"""Stage checkpoints added to an existing bundle from a training work dir (xr2ct add-stages)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from tiny_run import PROFILE

from xr2ct_lib.checkpoint import prefixed, save_checkpoint
from xr2ct_lib.models.bundle import fingerprint, write_bundle
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.models.diffusion import noise_scheduler
from xr2ct_lib.models.stages import StageCheckpointError, add_stages, read_stage


def _denoiser(seed: int) -> LatentDenoiser3D:
    torch.manual_seed(seed)
    return LatentDenoiser3D(in_channels=PROFILE.diffusion_shape[0], channels=(8, 16),
                            cond_dim=PROFILE.cxr_embed_dim, conv_kernel=(1, 3, 3))  # fmt: skip


def _bundle(tmp_path):
    from xr2ct_lib.models.cxr_encoder import StandinCXREncoder
    from xr2ct_lib.models.vae import make_standin_vae

    prov = {"format": 1, "profile": PROFILE.name, "schedule": {"diffusion": [7, 5, 3]},
            "cohort": {"simulated": False}}  # fmt: skip
    enc = StandinCXREncoder(PROFILE.cxr_embed_dim, width=4, in_size=PROFILE.cxr_size)
    norm = {"min": [-1.0] * 4, "max": [1.0] * 4}
    return write_bundle(tmp_path / "bundle", _denoiser(0), noise_scheduler(1000), PROFILE, norm,
                        make_standin_vae(PROFILE), enc, provenance=prov)  # fmt: skip


def test_add_stages_reads_both_work_dir_layouts_and_round_trips(tmp_path):
    bundle = _bundle(tmp_path)
    key = fingerprint(bundle)
    recipe = tmp_path / "work" / "models" / "diffusion" / "abc123"
    uncond, drr = _denoiser(1), _denoiser(2)
    uncond.save(recipe / "uncond" / "final" / "denoiser")  # this code's layout
    cfg = {"denoiser": drr.config_dict(), "scheduler": {"num_train_timesteps": 1000}}
    save_checkpoint(recipe / "drr" / "final", prefixed("denoiser", drr.state_dict()), cfg)
    cmd = [sys.executable, "-m", "xr2ct_lib.cli", "add-stages", str(bundle), "--work-dir",
           str(tmp_path / "work")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    prov = json.loads((bundle / "provenance.json").read_text())
    assert prov["stages"]["uncond"]["steps"] == 7 and prov["stages"]["drr"]["steps"] == 5
    assert prov["profile"] == PROFILE.name  # the rest of the provenance kept
    for want, stage in ((uncond, "uncond"), (drr, "drr")):
        got = read_stage(bundle, stage).state_dict()
        for k, v in want.state_dict().items():
            torch.testing.assert_close(got[k], v.half().float())
    assert fingerprint(bundle) == key  # generation caches keyed on the bundle stay valid
    # a tampered stage is refused, naming the file
    f = bundle / "stages" / "uncond" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(StageCheckpointError, match="does not match the sha256"):
        read_stage(bundle, "uncond")


def test_a_stage_of_another_denoiser_is_refused(tmp_path):
    bundle = _bundle(tmp_path)
    recipe = tmp_path / "work" / "models" / "diffusion" / "abc123"
    torch.manual_seed(0)
    other = LatentDenoiser3D(in_channels=PROFILE.diffusion_shape[0], channels=(8, 32),
                             cond_dim=PROFILE.cxr_embed_dim, conv_kernel=(1, 3, 3))  # fmt: skip
    other.save(recipe / "uncond" / "final" / "denoiser")
    with pytest.raises(StageCheckpointError, match="channels differ"):
        add_stages(bundle, recipe, ("uncond",))
    assert not (bundle / "stages").exists()


def test_unfinished_stage_is_refused_before_anything_is_written(tmp_path):
    bundle = _bundle(tmp_path)
    recipe = tmp_path / "work" / "models" / "diffusion" / "abc123"
    _denoiser(1).save(recipe / "uncond" / "final" / "denoiser")
    (recipe / "drr" / "last").mkdir(parents=True)  # a stage still training
    with pytest.raises(StageCheckpointError, match="has not finished"):
        add_stages(bundle, recipe)
    assert not (bundle / "stages").exists()
    assert "stages" not in json.loads((bundle / "provenance.json").read_text())
    with pytest.raises(StageCheckpointError, match="xr2ct add-stages"):
        read_stage(bundle, "uncond")
