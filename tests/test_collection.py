"""The book's RSPECT (simulated CT-only patients for pretraining), its seeds, the latent
classifier pretrained on it, and the X-ray reader as a CXR encoder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file

from xr2ct_lib.config import PROFILES, REPO_ROOT
from xr2ct_lib.models.normalizer import LatentNormalizer
from xr2ct_lib.train import collection as C
from xr2ct_lib.train import pretrained as pt
from xr2ct_lib.train.readers import READERS
from xr2ct_lib.train.readers.latent import READER as L

SMOKE = PROFILES["smoke"]
VAE = REPO_ROOT / "weights" / "smoke" / "vae"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("XR2CT_NO_PROGRESS", "1")
    monkeypatch.setattr(C, "CHUNK", 2)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Four smoke patients in two shards, built by one worker."""
    import xr2ct_lib.train.collection as mod

    old, mod.CHUNK = mod.CHUNK, 2
    try:
        out = tmp_path_factory.mktemp("coll") / "one"
        C.build_collection(SMOKE, VAE, 4, out, workers=1)
    finally:
        mod.CHUNK = old
    return out


def _arrays(d):
    return [load_file(str(d / f"shard-{k:05d}.safetensors")) for k in range(2)]


def test_collection_round_trip_labels_records_and_seeds(built):
    c = C.load_collection(built, SMOKE, VAE)
    assert c.z.shape == (4, 2, *SMOKE.latent_shape) and c.z.dtype == np.float16
    assert c.drr.shape == (4, SMOKE.cxr_size, SMOKE.cxr_size)
    assert 0 < c.drr.max() <= 1 and np.isfinite(c.z.astype(np.float32)).all()
    np.testing.assert_array_equal(c.labels, pt.pretraining_labels(0, 4))
    np.testing.assert_array_equal(c.records["pe_label"], c.labels)
    seeds = c.records["phantom_seed"].to_numpy()
    np.testing.assert_array_equal(seeds, pt.seed_block("ctpa_collection", 0, 4))
    assert (c.records.loc[c.labels == 1, "clot_voxels"] > 0).all()  # PE patients have clots
    assert (c.records.loc[c.labels == 0, "clot_voxels"] == 0).all()
    assert c.drr_images([0, 1]).shape == (2, 3, SMOKE.cxr_size, SMOKE.cxr_size)
    info = json.loads((built / C.INFO).read_text())
    assert info["patients"] == 4 and info["shards"] == 2 and info["shards_built"] == 2
    # the seeds meet a cohort's: refused
    with pytest.raises(ValueError, match="cohort patients'"):
        C.load_collection(built, SMOKE, VAE, cohort_seeds=[int(seeds[2])])


def test_same_arrays_with_two_workers_and_a_resumed_build(built, tmp_path):
    two = tmp_path / "two"
    C.build_collection(SMOKE, VAE, 4, two, workers=2)
    for a, b in zip(_arrays(built), _arrays(two), strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    # a truncated shard and no info file (a kill): only that shard is built again
    shard = two / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    (two / C.INFO).unlink()
    with pytest.raises(FileNotFoundError, match="build-collection --profile smoke"):
        C.load_collection(two, SMOKE)
    C.build_collection(SMOKE, VAE, 4, two, workers=1)
    assert json.loads((two / C.INFO).read_text())["shards_built"] == 1
    np.testing.assert_array_equal(load_file(str(shard))["z"], _arrays(built)[1]["z"])


def test_a_collection_of_another_vae_or_profile_is_refused(built, tmp_path):
    from xr2ct_lib.models.vae import load_vae

    vae = load_vae(VAE)
    with torch.no_grad():
        next(vae.parameters()).add_(0.01)
    vae.save(tmp_path / "vae")
    with pytest.raises(ValueError, match="another VAE"):
        C.load_collection(built, SMOKE, tmp_path / "vae")
    with pytest.raises(ValueError, match="built for profile smoke"):
        C.load_collection(built, PROFILES["workshop"])


def test_every_set_of_extra_patients_owns_disjoint_seed_blocks():
    blocks = sorted(pt.SEED_BLOCKS.values())
    assert all(a[1] <= b[0] for a, b in zip(blocks, blocks[1:], strict=False))
    seeds = pt.seed_block("ctpa_collection", 3, 10)
    pt.check_disjoint("ctpa_collection", seeds)
    assert seeds[0] == pt.FIRST_SEED + 703 * pt.BLOCK
    # the X-ray reader's seeds are not the collection's; nor is a cohort seed
    with pytest.raises(ValueError, match="it is cxr_reader"):
        pt.check_disjoint("ctpa_collection", pt.seed_block("cxr_reader", 0, 3))
    with pytest.raises(ValueError, match="outside its blocks"):
        pt.check_disjoint("ctpa_collection", [795172398])
    with pytest.raises(ValueError, match="leave its seed blocks"):
        pt.seed_block("ctpa_collection", 200, 5)
    # the shipped readers' recorded seeds lie in their own blocks
    for kind in ("clot", "cxr"):
        for profile in ("smoke", "workshop"):
            pre = json.loads((READERS[kind].directory(profile) / "config.json").read_text())
            pt.check_disjoint(f"{kind}_reader", pre["pretraining"]["seeds"])


def _planted(n: int = 40) -> C.Collection:
    """Latents whose PE patients carry a bright block: something a classifier can learn."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    z = rng.normal(0, 1, (n, 2, *SMOKE.latent_shape)).astype(np.float32)
    z[y == 1, :, :, 2:6, 2:6, 2:6] += 2.0
    seeds = pt.seed_block("ctpa_collection", 0, n)
    info = {"seeds": [int(seeds[0]), int(seeds[-1])], "vae_sha256": "abc",
            "command": "xr2ct build-collection --profile smoke"}  # fmt: skip
    return C.Collection(z.astype(np.float16), np.zeros((n, 8, 8), np.float16), y,
                        pd.DataFrame({"phantom_seed": seeds, "pe_label": y}), info)  # fmt: skip


def test_pretrained_latent_classifier_learns_and_is_refused_for_other_latents(tmp_path):
    norm = LatentNormalizer(-6.0, 6.0)
    model, rec = L.pretrain(SMOKE, _planted(), norm, epochs=6, val_share=0.25)
    assert rec["val_patients"] == 10 and rec["patients"] == 30
    assert rec["val_auc"] >= 0.9, rec
    L.save(model, tmp_path / "clf", rec)
    back = L.load(tmp_path / "clf", SMOKE, (), "abc", norm)
    assert "pretrained on 30 simulated CTPA-collection patients" in L.describe(back)
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    with pytest.raises(ValueError, match="another VAE or normaliser"):
        L.load(tmp_path / "clf", SMOKE, (), "abd", norm)
    with pytest.raises(ValueError, match="another VAE or normaliser"):
        L.load(tmp_path / "clf", SMOKE, (), "abc", LatentNormalizer(-5.0, 6.0))
    # fine-tuning copies the pretrained classifier unless an epoch beats them on validation
    from xr2ct_lib.train.classifier import fit_latent_classifier

    c = _planted(12)
    z = norm.normalize(c.z.astype(np.float32))
    split = {"train": np.arange(8), "val": np.arange(8, 12)}
    tuned = fit_latent_classifier(SMOKE, z, c.labels, split, 1, 0, "t", init=back)
    for k, v in back.state_dict().items():  # init itself is left unchanged
        assert torch.equal(model.state_dict()[k], v)
    assert tuned is not back
    # an init that scores perfectly on validation is never replaced by a worse epoch
    from sklearn.metrics import roc_auc_score

    from xr2ct_lib.train.classifier import score_latents

    assert roc_auc_score(c.labels[8:], score_latents(back, z[8:])) == 1.0
    for k, v in back.state_dict().items():
        assert torch.equal(tuned.state_dict()[k], v), k


def test_the_x_ray_reader_as_encoder_carries_its_outputs_and_round_trips(tmp_path):
    from xr2ct_lib.models.classifiers import load_classifier
    from xr2ct_lib.models.cxr_encoder import ReaderCXREncoder, load_encoder

    d = READERS["cxr"].directory("smoke")
    reader = load_classifier(d)
    enc = ReaderCXREncoder(reader, 512, str(d))
    x = torch.rand(3, 3, SMOKE.cxr_size, SMOKE.cxr_size)
    e = enc.embed(x)
    assert e.shape == (3, 512)
    width = reader.head[-1].in_features
    probs = torch.sigmoid(reader.all_logits(x))
    torch.testing.assert_close(e[:, width : width + probs.shape[1]], probs)
    assert torch.all(e[:, width + probs.shape[1] :] == 0)
    enc.save(tmp_path / "enc")
    back = load_encoder(tmp_path / "enc")
    assert torch.equal(back.embed(x), e)
    with pytest.raises(ValueError, match="do not fit"):
        ReaderCXREncoder(reader, 16)


def test_centroid_permutation_test_finds_a_closer_group_and_not_a_shuffled_one():
    from xr2ct_lib.eval.latent_space import centroid_permutation_test

    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (30, 8))
    near, far = rng.normal(0.1, 1, (30, 8)), rng.normal(1.0, 1, (15, 8))
    groups = {"real CTPA": real, "generated (conditional)": near, "unconditional": far}
    r = centroid_permutation_test(groups, n_perm=500)
    assert r["gain"] > 0 and r["p"] < 0.01
    # under the null (both groups alike) small p-values are as rare as they should be
    ps = []
    for i in range(20):
        alike = {"generated (conditional)": rng.normal(0.1, 1, (30, 8)),
                 "unconditional": rng.normal(0.1, 1, (15, 8))}  # fmt: skip
        ps.append(centroid_permutation_test({**groups, **alike}, n_perm=200, seed=i)["p"])
    assert np.mean(np.array(ps) < 0.05) <= 0.2 and np.median(ps) > 0.2


def test_the_bundles_pretraining_is_read_from_its_provenance():
    from xr2ct_lib.train.provenance import pretraining_reading

    assert pretraining_reading({"schedule": {}}) == ""
    prov = {
        "encoder": "pretrained X-ray reader's trunk",
        "pretraining": {
            "collection": {
                "patients": 2000,
                "seeds": [1, 2000],
                "command": "xr2ct build-collection",
            },
            "latent_classifier": {"patients": 1800, "val_patients": 200, "val_auc": 0.78},
            "loss": {"cxr": "L1 + 0.01·perceptual"},
            "init_from": {"path": "weights/workshop/stages/uncond"},
        },
    }
    text = pretraining_reading(prov)
    for part in (
        "2000 simulated CT-only patients",
        "AUC 0.78 on 200",
        "X-ray reader's trunk",
        "weights/workshop/stages/uncond",
        "L1 + 0.01·perceptual",
    ):
        assert part in text, part
