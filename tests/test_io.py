"""IO: round trips keep geometry; DICOM series and X-rays read right; bad files are named."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from xr2ct_lib.data.io import CTVolume, DataError, read_ct, read_cxr, write_ct


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    arr = rng.normal(0, 300, (6, 7, 8)).astype(np.float32)
    return CTVolume(arr, spacing=(2.5, 0.8, 0.7), origin=(-10.0, 5.0, 30.0))


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
def test_round_trip_keeps_values_spacing_and_orientation(tmp_path, volume, suffix):
    path = write_ct(volume, tmp_path / f"ct{suffix}")
    back = read_ct(path)
    np.testing.assert_allclose(back.array, volume.array, atol=1e-4)
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-5)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    assert not list(tmp_path.glob(".*")), "temporary file left behind"


def test_non_lps_file_is_reoriented(tmp_path, volume):
    import SimpleITK as sitk

    img = volume.to_sitk()
    flipped = sitk.Flip(img, [True, False, False])  # x axis now runs left → right
    sitk.WriteImage(flipped, str(tmp_path / "ras.nii.gz"))
    back = read_ct(tmp_path / "ras.nii.gz")
    np.testing.assert_allclose(back.array, volume.array, atol=1e-4)
    np.testing.assert_allclose(np.reshape(back.direction, (3, 3)), np.eye(3), atol=1e-6)


def _dicom_series(folder, n=4, thickness=2.0):
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir()
    uid = pydicom.uid.generate_uid()
    for i in range(n):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = i + 1
        x, y, z = (float(v) for v in src.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + thickness * i]
        ds.SliceThickness = thickness
        ds.save_as(folder / f"{i:03d}.dcm")
    return src


def test_dicom_series_folder_reads_as_hu_volume(tmp_path):
    src = _dicom_series(tmp_path / "series")
    vol = read_ct(tmp_path / "series")
    assert vol.shape == (4, src.Rows, src.Columns)
    assert vol.spacing[0] == pytest.approx(2.0)
    np.testing.assert_allclose(vol.spacing[1:], [float(v) for v in src.PixelSpacing])
    hu = src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept)
    # LPS orientation of CT_small is the identity: slice 0 is the stored image
    np.testing.assert_allclose(vol.array[0], hu, atol=1e-3)


def _cxr_dicom(path, photometric):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PhotometricInterpretation = photometric
    ds.RescaleSlope, ds.RescaleIntercept = 2, 100
    ds.save_as(path)
    return ds.pixel_array.astype(np.float32) * 2 + 100


def test_dicom_cxr_applies_rescale_and_inverts_monochrome1(tmp_path):
    raw = _cxr_dicom(tmp_path / "m2.dcm", "MONOCHROME2")
    _cxr_dicom(tmp_path / "m1.dcm", "MONOCHROME1")
    m2, m1 = read_cxr(tmp_path / "m2.dcm"), read_cxr(tmp_path / "m1.dcm")
    np.testing.assert_allclose(m2, raw)
    np.testing.assert_allclose(m1, raw.max() + raw.min() - raw)


def test_png_8_and_16_bit_and_jpeg(tmp_path):
    ramp16 = np.linspace(0, 65535, 64 * 48).reshape(64, 48).astype(np.uint16)
    Image.fromarray(ramp16).save(tmp_path / "a16.png")
    back = read_cxr(tmp_path / "a16.png")
    np.testing.assert_array_equal(back, ramp16.astype(np.float32))  # 16-bit precision kept
    ramp8 = (ramp16 >> 8).astype(np.uint8)
    Image.fromarray(ramp8).save(tmp_path / "a8.png")
    np.testing.assert_array_equal(read_cxr(tmp_path / "a8.png"), ramp8)
    Image.fromarray(np.stack([ramp8] * 3, -1)).save(tmp_path / "a.jpg", quality=95)
    jpg = read_cxr(tmp_path / "a.jpg")
    assert jpg.shape == (64, 48) and np.abs(jpg - ramp8).mean() < 3


def test_bad_files_raise_data_error_naming_the_file(tmp_path, volume):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        read_cxr(corrupt)
    with pytest.raises(DataError, match="absent.nii.gz.*does not exist"):
        read_ct(tmp_path / "absent.nii.gz")
    bad_ct = tmp_path / "bad.nii.gz"
    bad_ct.write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.nii.gz"):
        read_ct(bad_ct)
    with pytest.raises(DataError, match="unsupported X-ray format '.mha' .a CT volume"):
        read_cxr(write_ct(volume, tmp_path / "vol.mha"))
    single = tmp_path / "single"
    _dicom_series(single, n=1)
    with pytest.raises(DataError, match="1 slice"):
        read_ct(single)


def _cut(path, fraction=2 / 3):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha"])
def test_truncated_ct_is_refused_not_zero_filled(tmp_path, volume, suffix):
    # SimpleITK alone reads a cut NIfTI with the missing slices as zeros
    big = CTVolume(
        np.random.default_rng(1).normal(0, 300, (40, 64, 64)).astype(np.float32), (1,) * 3
    )
    path = _cut(write_ct(big, tmp_path / f"cut{suffix}"))
    with pytest.raises(DataError, match=rf"cut{suffix}: .*(truncated|damaged)"):
        read_ct(path)


def test_corrupt_gzip_ct_is_refused(tmp_path, volume):
    big = CTVolume(
        np.random.default_rng(1).normal(0, 300, (40, 64, 64)).astype(np.float32), (1,) * 3
    )
    path = write_ct(big, tmp_path / "flip.nii.gz")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="flip.nii.gz: corrupt gzip data"):
        read_ct(path)


def test_ct_with_nan_is_refused(tmp_path, volume):
    volume.array[2, 3, 4] = np.nan
    path = write_ct(volume, tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match="nan.nii.gz: 1 of 336 voxels are NaN"):
        read_ct(path)


def test_grey_rgb_xray_is_read_and_colour_or_blank_ones_are_refused(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (40, 1))
    Image.fromarray(np.stack([ramp] * 3, -1)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_allclose(read_cxr(tmp_path / "grey_rgb.png"), ramp)
    Image.fromarray(np.stack([ramp] * 3 + [np.full_like(ramp, 255)], -1)).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_cxr(tmp_path / "a.png"), ramp)  # RGBA: alpha ignored
    colour = np.stack([ramp, 255 - ramp, np.full_like(ramp, 128)], -1)
    Image.fromarray(colour).save(tmp_path / "photo.png")
    with pytest.raises(DataError, match="photo.png: a colour image"):
        read_cxr(tmp_path / "photo.png")
    Image.fromarray(np.zeros((32, 32), np.uint16)).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match="blank.png: image is blank"):
        read_cxr(tmp_path / "blank.png")
    with pytest.raises(DataError, match="is a folder"):
        read_cxr(tmp_path)


def test_dicom_without_pixel_data_is_named(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(DataError, match="nopix.dcm: DICOM file has no pixel data"):
        read_cxr(tmp_path / "nopix.dcm")


def test_the_xray_lister_and_reader_share_one_suffix_list(tmp_path):
    """``.dicom`` is listed and read, also without the 128-byte preamble (the lister once
    listed it and the reader then refused it)."""
    from xr2ct_lib.data.io import CXR_SUFFIXES, list_cxr_files

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.preamble = None
    ds.save_as(tmp_path / "p1.dicom", enforce_file_format=False)
    ds.save_as(tmp_path / "p2.DCM", enforce_file_format=False)
    (tmp_path / "notes.txt").write_text("not an X-ray")
    files = list_cxr_files(tmp_path)
    assert [f.name for f in files] == ["p1.dicom", "p2.DCM"] and ".dicom" in CXR_SUFFIXES
    for f in files:
        assert read_cxr(f).shape == (128, 128)
