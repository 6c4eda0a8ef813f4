"""Bundles on disk: float16 storage, provenance checks, replacement, the weights switch."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from tiny_run import PROFILE, prepared_cohort

from xr2ct_lib.models import bundle as B
from xr2ct_lib.models.cxr_encoder import StandinCXREncoder, load_encoder
from xr2ct_lib.models.denoiser import LatentDenoiser3D
from xr2ct_lib.models.diffusion import noise_scheduler
from xr2ct_lib.models.vae import load_vae, make_standin_vae
from xr2ct_lib.run import networks

PROV = {"cohort": {"generator_version": "phantom-9.9"}, "profile": PROFILE.name}


def parts(seed: int = 0):
    """An untrained denoiser, VAE and encoder of the tiny profile."""
    torch.manual_seed(seed)
    den = LatentDenoiser3D(PROFILE.diffusion_shape[0], PROFILE.unet_channels,
                           cond_dim=PROFILE.cxr_embed_dim, attention_head_dim=8)  # fmt: skip
    enc = StandinCXREncoder(PROFILE.cxr_embed_dim, width=4, in_size=PROFILE.cxr_size).eval()
    return den, make_standin_vae(PROFILE), enc


def write(path, seed=0, **kw):
    den, vae, enc = parts(seed)
    kw.setdefault("provenance", PROV)
    return B.write_bundle(path, den, noise_scheduler(), PROFILE, {"min": -3.0, "max": 3.0}, vae,
                          enc, **kw)  # fmt: skip


def test_float16_bundle_loads_as_float32_with_the_rounded_weights(tmp_path):
    den, vae, enc = parts()
    sched = noise_scheduler(prediction_type="sample")
    out = B.write_bundle(tmp_path / "b", den, sched, PROFILE, {"min": -3.0, "max": 3.0}, vae, enc,
                         dtype=torch.float16)  # fmt: skip
    loaded, loaded_sched = B.read_denoiser(out)
    assert loaded_sched.config.prediction_type == "sample"
    assert loaded_sched.config.beta_schedule == "squaredcos_cap_v2"
    for (name, p), q in zip(den.named_parameters(), loaded.parameters(), strict=True):
        assert q.dtype == torch.float32, name
        torch.testing.assert_close(q, p.detach().half().float(), rtol=0, atol=0)
    v = load_vae(out / "vae").autoencoder
    assert all(p.dtype == torch.float32 for p in v.parameters())
    e = load_encoder(out / "encoder")
    assert all(p.dtype == torch.float32 for p in e.parameters())
    full = B.write_bundle(tmp_path / "f", den, sched, PROFILE, {"min": -3.0, "max": 3.0}, vae, enc)
    size = lambda d: sum(f.stat().st_size for f in d.rglob("*.safetensors"))  # noqa: E731
    assert size(out) < 0.6 * size(full)


def test_a_bundle_of_another_cohort_generator_is_refused_in_one_line(tmp_path):
    out = write(tmp_path / "weights" / "smoke")
    assert B.check_provenance(out, PROFILE, "phantom-9.9")["profile"] == "smoke"
    with pytest.raises(B.StaleBundleError) as e:
        B.check_provenance(out, PROFILE, "phantom-2.0")
    msg = str(e.value)
    assert "\n" not in msg
    assert "was trained on cohort phantom-9.9, this code builds phantom-2.0" in msg
    assert "run `make weights PROFILE=smoke` to retrain" in msg


def test_a_bundle_of_another_profile_or_size_is_refused(tmp_path):
    out = write(tmp_path / "b")
    other = dataclasses.replace(PROFILE, name="workshop")
    with pytest.raises(
        B.StaleBundleError, match="trained for profile smoke, this run is profile workshop"
    ):
        B.check_provenance(out, other, "phantom-9.9")
    wider = dataclasses.replace(PROFILE, unet_channels=(16, 32))
    with pytest.raises(B.StaleBundleError, match=r"unet_channels \(8, 16\) → \(16, 32\)"):
        B.check_provenance(out, wider, "phantom-9.9")
    indep = dataclasses.replace(PROFILE, halves="independent")
    with pytest.raises(B.StaleBundleError, match="halves joint → independent"):
        B.check_provenance(out, indep, "phantom-9.9")
    (out / "provenance.json").unlink()
    with pytest.raises(B.StaleBundleError, match="has no provenance.json"):
        B.check_provenance(out, PROFILE, "phantom-9.9")


def test_rewriting_a_bundle_replaces_it_whole_and_leaves_no_temporaries(tmp_path):
    out = write(tmp_path / "b", seed=0)
    first = B.fingerprint(out)
    write(tmp_path / "b", seed=1)
    assert B.fingerprint(out) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]

    class Broken:
        def save(self, d):
            raise OSError("disk full")

    den, vae, _ = parts(2)
    with pytest.raises(OSError, match="disk full"):
        B.write_bundle(out, den, noise_scheduler(), PROFILE, {"min": -3.0, "max": 3.0}, vae,
                       Broken())  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert B.fingerprint(out) != first and (out / "encoder").is_dir()  # the previous one stays


def test_networks_for_shipped_names_the_missing_bundle_and_the_fix(tmp_path, monkeypatch):
    cfg = prepared_cohort(tmp_path / "run")
    monkeypatch.setattr(networks, "WEIGHTS_DIR", tmp_path / "weights")
    shipped = dataclasses.replace(cfg, weights="shipped")
    with pytest.raises(
        FileNotFoundError, match=r"holds a bundle: train one .*`make weights PROFILE=smoke`"
    ):
        networks.networks_for(shipped)
    write(tmp_path / "weights" / "smoke")  # trained on phantom-9.9: stale here
    with pytest.raises(B.StaleBundleError, match="phantom-9.9"):
        networks.networks_for(shipped)
    trained = networks.networks_for(cfg)
    assert trained.weights == "trained" and trained.latents == cfg.run_dir / "latents"
    assert networks.networks_for(cfg, "trained").key == trained.key
    with pytest.raises(ValueError, match="weights must be one of"):
        dataclasses.replace(cfg, weights="pretrained")


def test_bundle_profile_round_trips(tmp_path):
    out = write(tmp_path / "b")
    assert B.read_profile(out) == PROFILE
    prov = json.loads((out / "provenance.json").read_text())
    assert prov.pop(B.WEIGHTS_SHA256) == B.weights_sha256(out) and prov == PROV


def test_a_profile_json_older_than_the_profile_takes_new_training_fields_from_its_name():
    """A bundle written before a training field existed still loads (shape fields are its own)."""
    from xr2ct_lib.config import PROFILES

    d = dataclasses.asdict(PROFILES["smoke"])
    for k in ("vae_lr", "stage_lrs", "ddpm_steps"):
        d.pop(k)
    d["unet_channels"] = [4, 8]
    p = B.profile_from_dict(json.loads(json.dumps(d)))
    assert p.stage_lrs == PROFILES["smoke"].stage_lrs and p.vae_lr == PROFILES["smoke"].vae_lr
    assert p.unet_channels == (4, 8)  # the file's value wins over the built-in profile


def test_the_weights_parameter_goes_to_chapter_4_on():
    """`run-notebooks --weights` passes `weights` only to notebooks that declare it."""
    import jupytext

    from xr2ct_lib.book import NOTEBOOK_DIR, declared_parameters

    for path in sorted(NOTEBOOK_DIR.glob("0[1-5]_*.py")):
        params = declared_parameters(jupytext.read(path))
        assert {"profile", "manifest", "run_dir", "seed"} <= params, path.name
        assert ("weights" in params) == (path.name >= "04"), path.name
