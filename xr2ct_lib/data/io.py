"""Reading CT volumes and chest X-rays, with errors that name the file.

CT volumes come back as :class:`CTVolume` in SimpleITK's LPS convention: array axes are
(z, y, x) with x increasing towards the patient's Left, y towards Posterior and z towards
Superior, so index 0 is patient right / anterior / inferior. Chest X-rays come back as a
2D float32 array in which dense tissue (bone) is bright.
"""

from __future__ import annotations

import logging
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xr2ct_lib.files import FileError

CT_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")
DICOM_SUFFIXES = (".dcm", ".dicom")  # read as DICOM; any file with the DICM mark is too
CXR_SUFFIXES = (*DICOM_SUFFIXES, ".png", ".jpg", ".jpeg")  # the one list: reader and lister


class DataError(FileError):
    """A data file that cannot be used; the message names the file and the problem."""


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


def _itk_message(e: Exception, path: Path) -> str:
    """The useful line of a SimpleITK exception (its first lines name C++ source files)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("ITK ERROR:"):
            msg = ln.split("):", 1)[-1].strip() if "):" in ln else ln[len("ITK ERROR:") :]
            if "cannot be read" in msg and path.exists():  # ITK blames a missing file
                return "damaged, truncated or not in a format SimpleITK reads"
            return msg.strip()
    return lines[-1] if lines else type(e).__name__


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_dicom(path: str | Path) -> bool:
    """A DICOM file whatever its name (``IMG0001``, ``x.dicom``): 'DICM' after the preamble."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _gunzip_chunks(path: Path):
    """The decompressed bytes of a gzip file in chunks; :class:`DataError` if cut or corrupt."""
    d = zlib.decompressobj(wbits=31)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                while chunk:
                    if d.eof:  # another gzip member follows, or zero padding
                        if not chunk.strip(b"\0"):
                            break
                        d = zlib.decompressobj(wbits=31)
                    yield d.decompress(chunk)
                    chunk = d.unused_data if d.eof else b""
    except zlib.error as e:
        raise DataError(path, f"corrupt gzip data ({e}); the file is damaged") from e
    if not d.eof:
        raise DataError(path, "truncated: the gzip stream ends early; the copy is incomplete")


def _file_chunks(path: Path):
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            yield chunk


@contextmanager
def _nibabel_quiet():
    """Silence nibabel's header-fix messages ("setting 0 dims to 1") while reading."""
    log = logging.getLogger("nibabel.global")
    disabled, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = disabled


def check_nifti_complete(path: str | Path) -> None:
    """Read a whole NIfTI file; raise :class:`DataError` if it is cut, corrupt or has NaNs.

    SimpleITK reads a truncated or corrupt NIfTI without complaint (the missing slices become
    zeros) and turns NaN voxels into 0, so the voxel bytes are scanned here first.
    """
    import nibabel as nib

    path = Path(path)
    try:
        with _nibabel_quiet():  # it logs the header fixes it makes; a bad spacing is an error
            header = nib.load(str(path)).header
    except Exception as e:  # nibabel raises several types for a bad header
        msg = _first_line(e).replace(str(path), path.name)
        raise DataError(path, f"cannot read the NIfTI header ({msg})") from e
    shape, dt = header.get_data_shape(), header.get_data_dtype()
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as f, _nibabel_quiet():  # the header as stored, not "fixed"
        raw = type(header).from_fileobj(f, check=False)
    zooms = [float(z) for z in raw["pixdim"][1 : 1 + min(3, len(shape))]]
    if not all(np.isfinite(z) and z > 0 for z in zooms):  # ITK would read them as 1 mm
        raise DataError(path, f"voxel spacing {zooms} mm in the header (pixdim) is not "
                        "positive and finite: the geometry is broken; fix the header")  # fmt: skip
    offset, n_vox = int(header.get_data_offset()), int(np.prod(shape))
    chunks = _gunzip_chunks(path) if _suffix(path) == ".nii.gz" else _file_chunks(path)
    size, seen, bad, carry = 0, 0, 0, b""
    for chunk in chunks:
        start, size = max(0, offset - size), size + len(chunk)
        if dt.kind == "f" and start < len(chunk) and seen < n_vox:
            buf = carry + chunk[start:]
            usable = len(buf) - len(buf) % dt.itemsize
            values = np.frombuffer(buf[:usable], dt)[: n_vox - seen]
            seen += values.size
            bad += values.size - int(np.isfinite(values).sum())
            carry = buf[usable:]
    if size < offset + n_vox * dt.itemsize:
        raise DataError(
            path,
            f"truncated: {size} of the {offset + n_vox * dt.itemsize} bytes its header "
            f"announces ({tuple(shape)} voxels); the copy is incomplete",
        )
    if bad:
        raise DataError(path, f"{bad} of {n_vox} voxels are NaN or infinite")


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
    """Read a CT or label map: NIfTI, MHA/MHD, NRRD, a DICOM file, or a DICOM series folder.

    The whole file is read: a truncated or damaged file, a non-3D image and NaN/inf voxels
    raise :class:`DataError` naming the file. DICOM rescale slope/intercept are applied
    (values in HU). ``dtype=None`` keeps the stored voxel type.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise DataError(path, "file does not exist")
    try:
        if path.is_dir():
            img = _read_dicom_series(path)
        else:
            if _suffix(path) not in CT_SUFFIXES and not is_dicom(path):
                raise DataError(path, f"unsupported CT format {_suffix(path)!r} ({CT_SUFFIXES})")
            if _suffix(path) in (".nii", ".nii.gz"):
                check_nifti_complete(path)
            img = sitk.ReadImage(str(path))
        vol = CTVolume.from_sitk(img)
    except DataError:
        raise
    except (RuntimeError, ValueError) as e:
        raise DataError(path, f"cannot read as a 3D volume ({_itk_message(e, path)})") from e
    if min(vol.shape) < 2:
        raise DataError(path, f"not a 3D volume (shape {vol.shape})")
    if not all(np.isfinite(v) and v > 0 for v in vol.spacing):
        raise DataError(path, f"voxel spacing {vol.spacing} mm is not positive and finite")
    if vol.array.dtype.kind == "f" and not np.isfinite(vol.array).all():
        bad = int((~np.isfinite(vol.array)).sum())
        raise DataError(path, f"{bad} of {vol.array.size} voxels are NaN or infinite")
    if dtype is not None:
        vol.array = vol.array.astype(dtype, copy=False)
    return vol


def write_ct(vol: CTVolume, path: str | Path) -> Path:
    """Write a volume (NIfTI/MHA/NRRD by suffix) atomically: temporary name, then rename."""
    import SimpleITK as sitk

    from xr2ct_lib.files import atomic_write

    path = Path(path)
    img = vol.to_sitk()
    return atomic_write(path, lambda tmp: sitk.WriteImage(img, tmp, True), suffix=_suffix(path))


def _grey(arr: np.ndarray, path: Path) -> np.ndarray:
    """Colour (H, W, 3) → grey; refuse an image whose channels really differ (not a radiograph).

    Grey radiographs saved as RGB (JPEG exports, screenshots) have equal channels up to
    compression noise; a coloured photo or a heat map overlay does not.
    """
    rgb = arr[..., :3].astype(np.float32)
    spread = float((rgb.max(-1) - rgb.min(-1)).mean())
    scale = max(float(rgb.max() - rgb.min()), 1e-6)
    if spread > 0.04 * scale:
        raise DataError(
            path,
            f"a colour image (its RGB channels differ by {100 * spread / scale:.0f} % of the "
            "range on average); expected a greyscale radiograph",
        )
    return rgb.mean(axis=-1)


def _read_dicom_cxr(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    # a file named .dcm/.dicom without the 128-byte preamble (older devices) is still DICOM
    ds = pydicom.dcmread(str(path), force=not is_dicom(path))
    if "PixelData" not in ds:
        raise DataError(path, "DICOM file has no pixel data (a report or structured document?)")
    arr = ds.pixel_array
    rgb = int(getattr(ds, "SamplesPerPixel", 1)) == 3
    if not rgb and arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if rgb and arr.ndim == 3:
        return _grey(arr, path)
    arr = apply_modality_lut(arr, ds).astype(np.float32)
    if arr.ndim != 2:
        raise DataError(path, f"not a 2D image (pixel array shape {arr.shape})")
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr  # MONOCHROME1: low values are bright
    return arr


def _read_raster(path: Path) -> np.ndarray:
    """8/16-bit greyscale PNG/JPEG as is; RGB(A) and palette images through :func:`_grey`."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("LA", "La"):
            im = im.getchannel(0)
        elif im.mode in ("RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr", "HSV", "LAB"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    return _grey(arr, path) if arr.ndim == 3 else arr.astype(np.float32)


def list_cxr_files(folder: str | Path) -> list[Path]:
    """The X-ray files of ``folder`` that :func:`read_cxr` reads (a suffix of
    :data:`CXR_SUFFIXES`, any case), sorted by name."""
    files = Path(folder).iterdir()
    return sorted(f for f in files if f.is_file() and _suffix(f) in CXR_SUFFIXES)


def read_cxr(path: str | Path) -> np.ndarray:
    """Read a chest X-ray (DICOM, 8/16-bit PNG, JPEG) as float32 (H, W), bone bright.

    Raises :class:`DataError` naming the file for anything that is not a usable greyscale
    2D radiograph: unreadable, colour, blank (one value), non-finite values.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder; an X-ray is one image file")
    if not path.is_file():
        raise DataError(path, "file does not exist")
    suffix = ".dcm" if is_dicom(path) else _suffix(path)
    if suffix not in CXR_SUFFIXES:
        kind = " (a CT volume?)" if suffix in CT_SUFFIXES else ""
        raise DataError(path, f"unsupported X-ray format {suffix!r}{kind}; use {CXR_SUFFIXES}")
    try:
        arr = _read_dicom_cxr(path) if suffix in DICOM_SUFFIXES else _read_raster(path)
    except DataError:
        raise
    except Exception as e:  # decoder errors differ by library; name the file in every case
        detail = str(e).replace(f" '{path}'", "").replace(str(path), "it")  # named once
        raise DataError(path, f"cannot read as an image ({type(e).__name__}: {detail})") from e
    if arr.ndim != 2:
        raise DataError(path, f"not a 2D image (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise DataError(path, "image has non-finite values")
    if arr.min() == arr.max():
        raise DataError(path, f"image is blank (every pixel is {arr.min():g})")
    return arr
