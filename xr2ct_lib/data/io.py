"""Reading CT volumes and chest X-rays, with errors that name the file.

CT volumes come back as :class:`CTVolume` in SimpleITK's LPS convention: array axes are
(z, y, x) with x increasing towards the patient's Left, y towards Posterior and z towards
Superior, so index 0 is patient right / anterior / inferior. Chest X-rays come back as a
2D float32 array in which dense tissue (bone) is bright.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CT_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")
CXR_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")


class DataError(ValueError):
    """A file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class CTVolume:
    """A CT (or label map) as a (z, y, x) array in LPS with its geometry in mm."""

    array: np.ndarray
    spacing: tuple[float, float, float]  # (sz, sy, sx)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (x, y, z) as SimpleITK
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    def to_sitk(self):
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        img.SetSpacing(tuple(float(s) for s in self.spacing[::-1]))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection(tuple(float(d) for d in self.direction))
        return img

    @classmethod
    def from_sitk(cls, img) -> CTVolume:
        import SimpleITK as sitk

        if img.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {img.GetDimension()}D")
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("expected a scalar image, got a multi-component one")
        img = sitk.DICOMOrient(img, "LPS")
        return cls(
            array=sitk.GetArrayFromImage(img),
            spacing=tuple(float(s) for s in img.GetSpacing()[::-1]),
            origin=tuple(float(o) for o in img.GetOrigin()),
            direction=tuple(float(d) for d in img.GetDirection()),
        )


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _read_dicom_series(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(folder, "folder holds no DICOM series")
    files = max((reader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len)
    if len(files) < 2:
        raise DataError(folder, f"DICOM series has {len(files)} slice; a CT needs several")
    reader.SetFileNames(files)
    return reader.Execute()


def read_ct(path: str | Path, dtype=np.float32) -> CTVolume:
    """Read a CT or label map: NIfTI, MHA/MHD, NRRD, or a folder holding a DICOM series.

    DICOM rescale slope/intercept are applied (values in HU). Raises :class:`DataError`.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise DataError(path, "file does not exist")
    try:
        if path.is_dir():
            img = _read_dicom_series(path)
        else:
            if _suffix(path) not in CT_SUFFIXES:
                raise DataError(path, f"unsupported CT format {_suffix(path)!r} ({CT_SUFFIXES})")
            img = sitk.ReadImage(str(path))
        vol = CTVolume.from_sitk(img)
    except DataError:
        raise
    except (RuntimeError, ValueError) as e:
        raise DataError(path, f"cannot read as a 3D volume ({_first_line(e)})") from e
    if min(vol.shape) < 2:
        raise DataError(path, f"not a 3D volume (shape {vol.shape})")
    vol.array = vol.array.astype(dtype, copy=False)
    return vol


def write_ct(vol: CTVolume, path: str | Path) -> Path:
    """Write a volume (NIfTI/MHA/NRRD by suffix) atomically: temporary name, then rename."""
    import SimpleITK as sitk

    from xr2ct_lib.files import atomic_write

    img = vol.to_sitk()
    return atomic_write(
        path, lambda tmp: sitk.WriteImage(img, tmp, True), suffix=_suffix(Path(path))
    )


def _read_dicom_cxr(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(str(path))
    if "PixelData" not in ds:
        raise DataError(path, "DICOM file has no pixel data")
    arr = ds.pixel_array
    if getattr(ds, "SamplesPerPixel", 1) == 1 and arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    arr = apply_modality_lut(arr, ds).astype(np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr.mean(axis=-1)
    if arr.ndim != 2:
        raise DataError(path, f"not a 2D image (pixel array shape {arr.shape})")
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr  # MONOCHROME1: low values are bright
    return arr


def _read_raster(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK"):
            im = im.convert("L")
        arr = np.asarray(im)
    return arr.astype(np.float32)


def read_cxr(path: str | Path) -> np.ndarray:
    """Read a chest X-ray (DICOM, 8/16-bit PNG, JPEG) as float32 (H, W), bone bright."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file does not exist")
    suffix = _suffix(path)
    if suffix not in CXR_SUFFIXES:
        raise DataError(path, f"unsupported X-ray format {suffix!r} ({CXR_SUFFIXES})")
    try:
        arr = _read_dicom_cxr(path) if suffix == ".dcm" else _read_raster(path)
    except DataError:
        raise
    except Exception as e:  # decoder errors differ by library; name the file in every case
        raise DataError(path, f"cannot read as an image ({type(e).__name__}: {e})") from e
    if arr.ndim != 2:
        raise DataError(path, f"not a 2D image (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise DataError(path, "image has non-finite values")
    return arr


def image_ndim(path: str | Path) -> int:
    """Number of spatial dimensions of an image file or DICOM series folder (cheap check)."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise DataError(path, "file does not exist")
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise DataError(path, "folder holds no DICOM series")
        n = max(len(reader.GetGDCMSeriesFileNames(str(path), s)) for s in series)
        return 3 if n > 1 else 2
    suffix = _suffix(path)
    if suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:
            raise DataError(path, f"cannot read as an image ({type(e).__name__}: {e})") from e
        return 2
    if suffix == ".dcm":
        import pydicom

        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception as e:
            raise DataError(path, f"cannot read as DICOM ({type(e).__name__}: {e})") from e
        return 3 if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else 2
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise DataError(path, f"cannot read the image header ({_first_line(e)})") from e
    size = [s for s in reader.GetSize() if s > 1]
    return len(size)
