"""Figures: slice orientation in the radiological convention, and the panels of the chapters."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from xr2ct_lib.viz import panels  # noqa: E402
from xr2ct_lib.viz.curves import training_curves  # noqa: E402
from xr2ct_lib.viz.volumes import plane_slice  # noqa: E402

# array axes (z, y, x): z inferior→superior, y anterior→posterior, x patient right→left
D, H, W = 6, 8, 10


def marked_volume() -> np.ndarray:
    """Zeros with one marker voxel per direction, at a corner no other marker shares."""
    v = np.zeros((D, H, W))
    v[D - 1, 3, 4] = 1  # superior (head)
    v[2, 0, 4] = 2  # anterior
    v[2, 3, 0] = 3  # patient's right
    return v


def where(img: np.ndarray, value: int) -> tuple[int, int]:
    (r,), (c,) = np.nonzero(img == value)
    return int(r), int(c)


def test_axial_is_seen_from_the_feet_anterior_up():
    img = plane_slice(marked_volume(), "axial", 2)
    assert img.shape == (H, W)
    assert where(img, 2)[0] == 0  # anterior at the top row
    assert where(img, 3)[1] == 0  # the patient's right on the image left


def test_coronal_faces_the_patient_head_up():
    img = plane_slice(marked_volume(), "coronal", 3)
    assert img.shape == (D, W)
    assert where(img, 1)[0] == 0  # head at the top row
    assert where(img, 3)[1] == 0  # the patient's right on the image left


def test_sagittal_is_head_up_anterior_left():
    img = plane_slice(marked_volume(), "sagittal", 4)
    assert img.shape == (D, H)
    assert where(img, 1)[0] == 0  # head at the top row
    assert where(img, 2)[1] == 0  # anterior on the image left


def test_plane_slice_defaults_to_the_middle_and_rejects_unknown_planes():
    v = np.arange(D * H * W, dtype=float).reshape(D, H, W)
    np.testing.assert_array_equal(plane_slice(v, "axial"), v[D // 2])
    np.testing.assert_array_equal(plane_slice(v, "coronal"), v[:, H // 2][::-1])
    np.testing.assert_array_equal(plane_slice(v, "sagittal"), v[:, :, W // 2][::-1])
    with pytest.raises(ValueError, match="plane must be one of"):
        plane_slice(v, "oblique")


def test_key_slices_cut_through_the_clot_centre():
    rng = np.random.default_rng(0)
    ct = rng.uniform(-1, 1, (D, H, W)).astype(np.float32)
    clot = np.zeros((D, H, W), np.uint8)
    clot[4, 6, 2:5] = 1  # axial slice 4, coronal slice 6
    real = {"P1": {"ct": ct, "clot": clot, "cxr": rng.random((3, 16, 16))}}
    fig = panels.key_slices(["P1"], {"P1": -ct}, real, clots=True, title="test")
    axes = fig.axes
    assert [a.get_title() for a in axes] == [
        "P1 X-ray", "GT axial", "generated axial", "GT coronal", "generated coronal",
    ]  # fmt: skip
    np.testing.assert_array_equal(axes[1].images[0].get_array(), ct[4])
    np.testing.assert_array_equal(axes[2].images[0].get_array(), -ct[4])
    np.testing.assert_array_equal(axes[3].images[0].get_array(), plane_slice(ct, "coronal", 6))
    assert axes[1].collections  # the clot outline is drawn
    plt.close(fig)


def test_training_curves_skip_absent_columns():
    h = pd.DataFrame({"step": range(5), "drr_loss": np.linspace(1, 0.5, 5)})
    fig = training_curves(h, {"drr_loss": "on DRRs", "cxr_loss": "on X-rays"}, "loss", "t")
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["on DRRs"]
    plt.close(fig)
