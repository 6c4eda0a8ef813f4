"""The one atomic writer, the NIfTI writer, the HU window and the latent normaliser."""

import os
import stat

import nibabel as nib
import numpy as np
import pytest
import torch

from xr2ct_lib.data.hu_window import PAPER_WINDOW, HUWindow
from xr2ct_lib.files import atomic_write, atomic_write_text, current_umask, write_nifti
from xr2ct_lib.models.normalizer import LatentNormalizer


def test_atomic_write_has_normal_permissions_and_leaves_nothing_on_failure(tmp_path):
    p = atomic_write_text(tmp_path / "a" / "out.txt", "hello")
    assert p.read_text() == "hello"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~current_umask()

    def boom(tmp):
        open(tmp, "w").write("partial")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "b.txt", boom)
    assert sorted(os.listdir(tmp_path)) == ["a"]  # no final file, no temporary left
    atomic_write_text(p, "new")
    assert p.read_text() == "new" and os.listdir(p.parent) == ["out.txt"]


def test_write_nifti_round_trip_spacing_and_orientation(tmp_path):
    a = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (z, y, x)
    p = write_nifti(tmp_path / "v.nii.gz", a, (3.0, 2.0, 1.0), origin_lps=(10, 20, 30))
    img = nib.load(p)
    assert img.shape == (6, 5, 4)  # NIfTI stores (x, y, z)
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), a)
    np.testing.assert_allclose(img.header.get_zooms(), (1.0, 2.0, 3.0))
    # LPS identity in ITK is diag(-1, -1, 1) in NIfTI's RAS affine; origin flips x and y
    np.testing.assert_allclose(np.diag(img.affine)[:3], (-1.0, -2.0, 3.0))
    np.testing.assert_allclose(img.affine[:3, 3], (-10.0, -20.0, 30.0))
    with pytest.raises(ValueError, match="3D"):
        write_nifti(tmp_path / "bad.nii.gz", a[0], 1.0)
    assert not (tmp_path / "bad.nii.gz").exists()


def test_hu_window_maps_both_ways_for_numpy_and_torch():
    hu = np.array([-1000.0, -100.0, 400.0, 900.0, 3000.0])
    u = PAPER_WINDOW.to_unit(hu)
    np.testing.assert_allclose(u, [-1, -1, 0, 1, 1])
    np.testing.assert_allclose(PAPER_WINDOW.to_hu(u), [-100, -100, 400, 900, 900])
    t = PAPER_WINDOW.to_unit(torch.tensor(hu))
    assert torch.is_tensor(t) and torch.allclose(t, torch.tensor(u, dtype=t.dtype))
    with pytest.raises(ValueError):
        HUWindow(100, 100)


@pytest.mark.parametrize("per_channel", [False, True])
def test_latent_normalizer_round_trip(tmp_path, per_channel):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 2, 4, 3, 4, 4)) * np.arange(1, 5).reshape(4, 1, 1, 1)
    norm = LatentNormalizer.fit(z, per_channel=per_channel, vae="test")
    zn = norm.normalize(z)
    assert zn.min() == pytest.approx(-1) and zn.max() == pytest.approx(1)
    if per_channel:  # every channel spans [-1, 1] on its own
        np.testing.assert_allclose(zn.min(axis=(0, 1, 3, 4, 5)), -1)
    np.testing.assert_allclose(norm.denormalize(zn), z, atol=1e-12)
    zt = torch.from_numpy(z[0]).float()
    assert torch.allclose(norm.denormalize(norm.normalize(zt)), zt, atol=1e-5)
    loaded = LatentNormalizer.load(norm.save(tmp_path / "n.json"))
    assert loaded == norm and loaded.extra == {"vae": "test"}
    with pytest.raises(ValueError, match="max > min"):
        LatentNormalizer(1.0, 1.0)


def test_state_sha256_sees_every_value_dtype_and_name():
    import torch

    from xr2ct_lib.checkpoint import state_sha256

    state = {"a.weight": torch.arange(6.0).reshape(2, 3), "b.bias": torch.zeros(3)}
    same = {k: v.clone() for k, v in reversed(state.items())}
    assert state_sha256(state) == state_sha256(same)  # order of the dict does not matter
    changed = {**state, "b.bias": torch.tensor([0.0, 0.0, 1e-7])}
    assert state_sha256(changed) != state_sha256(state)
    assert state_sha256({**state, "b.bias": torch.zeros(3).half()}) != state_sha256(state)
    assert state_sha256({"c.bias": state["b.bias"], "a.weight": state["a.weight"]}) != (
        state_sha256(state)
    )
