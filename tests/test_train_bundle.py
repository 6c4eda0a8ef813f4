"""``make weights`` (``train/bundle.py``): every part trained and written as a bundle."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_run import PROFILE, prepared_cohort

from xr2ct_lib.data.cohort import PreparedCohort


def test_train_bundle_writes_fp16_weights_provenance_and_loss_curve(tmp_path, monkeypatch):
    """`make weights` on a tiny cohort: every part trained, folds 0 and 1 held out."""
    import hashlib

    from xr2ct_lib.data import cohort as cohort_mod
    from xr2ct_lib.data.phantom import GENERATOR_VERSION
    from xr2ct_lib.models.bundle import StaleBundleError, check_provenance, read_denoiser
    from xr2ct_lib.train.bundle import train_bundle

    work = tmp_path / "work"
    prepared_cohort(work)
    # the cohort is already prepared (building phantoms is tested in test_phantom)
    monkeypatch.setattr(cohort_mod, "prepare", lambda cfg: PreparedCohort(cfg.run_dir))
    out = train_bundle(PROFILE, "long", out=tmp_path / "weights" / "smoke", work_dir=work,
                       manifest=work / "manifest.csv", ckpt_every=2, command="test")  # fmt: skip
    from safetensors import safe_open

    for part in ("denoiser", "vae", "encoder"):
        with safe_open(str(out / part / "model.safetensors"), "pt") as f:
            dtypes = {f.get_tensor(k).dtype for k in f.keys()}
        assert torch.float16 in dtypes and torch.float32 not in dtypes, part
    denoiser, _ = read_denoiser(out)
    assert all(p.dtype == torch.float32 for p in denoiser.parameters())
    prov = check_provenance(out, PROFILE)
    assert prov["cohort"]["generator_version"] == GENERATOR_VERSION
    assert prov["cohort"]["held_out_folds"] == [0, 1]
    assert prov["cohort"]["train_folds"] == [2, 3, 4, 5] and prov["cohort"]["train_patients"] == 8
    sha = hashlib.sha256((work / "manifest.csv").read_bytes()).hexdigest()
    assert prov["cohort"]["manifest_sha256"] == sha
    assert prov["schedule"]["diffusion"] == list(PROFILE.train_steps_long)
    assert prov["command"] == "test" and "git_commit" in prov["code"] and prov["machine"]["cpu"]
    assert all(np.isfinite(v) for k, v in prov["final_losses"].items() if k != "note")
    curve = pd.read_csv(out / "loss_curve.csv")
    counts = curve.groupby("part").size().to_dict()
    assert counts == {"vae": 4, "encoder": 4, "uncond": 2, "drr": 2, "cxr": 3}
    # the branch points of chapter 10: the stage checkpoints, fp16, in the provenance,
    # equal (to fp16 precision) to the EMA weights the uncond stage ended with
    from xr2ct_lib.checkpoint import load_checkpoint
    from xr2ct_lib.models.stages import available_stages, read_stage

    assert available_stages(out) == ["uncond", "drr"]
    assert prov["stages"]["uncond"]["steps"] == PROFILE.train_steps_long[0]
    recipe = next((work / "models" / "diffusion").iterdir())
    ema, _ = load_checkpoint(recipe / "uncond" / "final" / "denoiser")
    stage = read_stage(out, "uncond").state_dict()
    for k, v in ema.items():
        torch.testing.assert_close(stage[k], v.half().float())
    assert not torch.equal(stage["init_conv.weight"], denoiser.state_dict()["init_conv.weight"])
    # the same command again reuses every finished part and writes the same weights
    digest = hashlib.sha256((out / "denoiser" / "model.safetensors").read_bytes()).hexdigest()
    train_bundle(PROFILE, "long", out=out, work_dir=work, manifest=work / "manifest.csv",
                 ckpt_every=2, command="test")  # fmt: skip
    again = hashlib.sha256((out / "denoiser" / "model.safetensors").read_bytes()).hexdigest()
    assert again == digest
    # the halves and the diffusion steps overridden (chapter 10's equal-schedule pair): the
    # VAE and encoder are reused, the provenance records both, the bundle loads as such
    indep = tmp_path / "weights" / "smoke-halves-independent"
    other = train_bundle(PROFILE, "long", out=indep, work_dir=work, ckpt_every=2,
                         manifest=work / "manifest.csv", command="test", halves="independent",
                         diffusion_steps=(1, 0, 1), keep_stages=False)  # fmt: skip
    assert available_stages(indep) == [] and not (indep / "stages").exists()
    prov = check_provenance(other, dataclasses.replace(PROFILE, halves="independent"))
    assert prov["halves"] == "independent" and prov["schedule"]["diffusion"] == [1, 0, 1]
    assert pd.read_csv(other / "loss_curve.csv").groupby("part").size().to_dict() == {
        "vae": 4, "encoder": 4, "uncond": 1, "cxr": 1}  # fmt: skip
    with pytest.raises(StaleBundleError, match="halves"):
        check_provenance(other, PROFILE)
