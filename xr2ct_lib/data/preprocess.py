"""The paper's CT and CXR preprocessing.

CT: Hounsfield units → isotropic resampling (1 mm in ``paper``) → window −100…900 HU
(:data:`~xr2ct_lib.data.hu_window.PAPER_WINDOW`) → crop to the lungs → resize to the profile's
size → scale to [−1, 1] → two halves by alternate slices. CXR: robust normalisation →
square resize → three channels.
Arrays are (D, H, W) = (z, y, x) in LPS (see :mod:`xr2ct_lib.data.io`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from xr2ct_lib.data.hu_window import PAPER_WINDOW
from xr2ct_lib.data.io import CTVolume, DataError, read_cxr

LUNG_LABELS = (10, 11, 12, 13, 14)  # TotalSegmentator lung lobes
CROP_MARGIN_MM = 6.0


def resample_isotropic(vol: CTVolume, spacing_mm: float, is_label: bool = False) -> CTVolume:
    """Resample to ``spacing_mm`` isotropic voxels (SimpleITK; nearest for label maps)."""
    import SimpleITK as sitk

    img = vol.to_sitk()
    old_sp = np.array(img.GetSpacing())
    size = [
        max(1, int(round(n * s / spacing_mm))) for n, s in zip(img.GetSize(), old_sp, strict=True)
    ]
    interp = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    fill = 0.0 if is_label else float(vol.array.min())
    out = sitk.Resample(
        img, size, sitk.Transform(), interp, img.GetOrigin(), (float(spacing_mm),) * 3,
        img.GetDirection(), fill, img.GetPixelID(),
    )  # fmt: skip
    return CTVolume(
        array=sitk.GetArrayFromImage(out),
        spacing=(float(spacing_mm),) * 3,
        origin=vol.origin,
        direction=vol.direction,
    )


def lung_mask(ct_hu: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Lung mask: the TotalSegmentator lobes when a label map is given, else a threshold one.

    The threshold segmentation keeps air (< −400 HU) enclosed by the body in each axial
    slice and then the two largest 3D components (the lungs; outside air is removed by
    the body fill).
    """
    if labels is not None:
        mask = np.isin(labels, LUNG_LABELS)
        if mask.any():
            return mask
    from scipy import ndimage

    body = ct_hu > -500
    body = ndimage.binary_opening(body, iterations=1)
    lab, n = ndimage.label(body)
    if n == 0:
        raise ValueError("no body found in the CT (no voxel above −500 HU)")
    body = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    filled = np.stack([ndimage.binary_fill_holes(s) for s in body])
    air = (ct_hu < -400) & filled & ~body
    air = ndimage.binary_opening(air, iterations=1)
    lab, n = ndimage.label(air)
    if n == 0:
        raise ValueError("no lung found by thresholding (no air inside the body)")
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.argsort(sizes)[::-1][:2] + 1
    keep = [k for k in keep if sizes[k - 1] >= 0.1 * sizes.max()]
    return np.isin(lab, keep)


def mask_bbox(mask: np.ndarray, margin_vox: int = 0) -> tuple[slice, ...]:
    """Bounding box of a mask, grown by ``margin_vox`` and clipped to the array."""
    if not mask.any():
        raise ValueError("cannot crop to an empty mask")
    idx = np.nonzero(mask)
    return tuple(
        slice(max(0, int(i.min()) - margin_vox), min(n, int(i.max()) + 1 + margin_vox))
        for i, n in zip(idx, mask.shape, strict=True)
    )


def crop_to_mask(
    arrays: dict[str, np.ndarray], mask: np.ndarray, margin_vox: int = 0
) -> dict[str, np.ndarray]:
    """Crop every array of the dict to the bounding box of ``mask``."""
    box = mask_bbox(mask, margin_vox)
    return {k: v[box] for k, v in arrays.items()}


def resize_volume(a: np.ndarray, size: Sequence[int], mode: str = "trilinear") -> np.ndarray:
    """Resize a (D, H, W) array with MONAI ``Resize`` (``trilinear``, ``area`` or ``nearest``)."""
    from monai.transforms import Resize

    kw = {"align_corners": False} if mode == "trilinear" else {}
    out = Resize(spatial_size=tuple(size), mode=mode, **kw)(
        torch.as_tensor(a[None], dtype=torch.float32)
    )
    return np.asarray(out[0], dtype=np.float32)


def resize_mask(m: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a binary mask by area averaging; a voxel is kept when ≥ 25 % covered.

    The low threshold keeps small structures (clots of a few voxels) when downsampling.
    """
    return (resize_volume(m.astype(np.float32), size, mode="area") >= 0.25).astype(np.uint8)


def split_halves(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two halves by alternate slices: even slices, odd slices."""
    return a[0::2], a[1::2]


def merge_halves(even: np.ndarray, odd: np.ndarray) -> np.ndarray:
    """Interleave two halves back into one volume (inverse of :func:`split_halves`)."""
    even, odd = np.asarray(even), np.asarray(odd)
    if even.shape[1:] != odd.shape[1:] or not 0 <= even.shape[0] - odd.shape[0] <= 1:
        raise ValueError(f"halves do not fit together: {even.shape} and {odd.shape}")
    out = np.empty((even.shape[0] + odd.shape[0], *even.shape[1:]), dtype=even.dtype)
    out[0::2], out[1::2] = even, odd
    return out


def random_flip(
    arrays: dict[str, np.ndarray], rng: np.random.Generator, p: float = 0.5
) -> dict[str, np.ndarray]:
    """Augmentation: flip every array left-right (the x axis) together, with probability p."""
    if rng.random() < p:
        return {k: np.ascontiguousarray(v[..., ::-1]) for k, v in arrays.items()}
    return arrays


def _steps(
    ct: CTVolume,
    size: Sequence[int],
    spacing_mm: float,
    labels: CTVolume | None,
    masks: dict[str, CTVolume] | None,
    record: dict | None,
    reader_size: Sequence[int] | None = None,
) -> dict:
    masks = masks or {}
    for name, m in [("labels", labels), *masks.items()]:
        if m is not None and m.shape != ct.shape:
            raise ValueError(f"{name} has shape {m.shape}, the CT {ct.shape}: not on one grid")
    iso = resample_isotropic(ct, spacing_mm)
    iso_labels = resample_isotropic(labels, spacing_mm, is_label=True).array if labels else None
    iso_masks = {k: resample_isotropic(m, spacing_mm, True).array for k, m in masks.items()}
    windowed = PAPER_WINDOW.clip(iso.array)
    lung = lung_mask(iso.array, iso_labels)
    margin = int(round(CROP_MARGIN_MM / spacing_mm))
    cropped = crop_to_mask({"ct": windowed, "lung": lung, **iso_masks}, lung, margin)
    resized = resize_volume(cropped["ct"], size)
    ct_unit = PAPER_WINDOW.to_unit(resized)
    out = {"ct": ct_unit, "lung": resize_mask(cropped["lung"], size)}
    for k in iso_masks:
        out[k] = resize_mask(cropped[k], size)
    out["halves"] = split_halves(ct_unit)
    if reader_size is not None:  # the same crop at the clot reader's size
        out["ct_reader"] = PAPER_WINDOW.to_unit(resize_volume(cropped["ct"], reader_size))
        for k in iso_masks:
            out[f"{k}_reader"] = resize_mask(cropped[k], reader_size)
    if record is not None:
        hu = {"vmin": -1000, "vmax": 1000}
        win = {"vmin": PAPER_WINDOW.lo, "vmax": PAPER_WINDOW.hi}
        record["HU (as read)"] = (ct.array, hu)
        record[f"resampled to {spacing_mm:g} mm"] = (iso.array, hu)
        record[f"windowed {PAPER_WINDOW.describe()}"] = (windowed, win)
        record["lung crop"] = (cropped["ct"], win)
        record[f"resized to {tuple(size)}"] = (resized, win)
        record["scaled to [−1, 1]"] = (ct_unit, {"vmin": -1, "vmax": 1})
        record["half 1 (even slices)"] = (out["halves"][0], {"vmin": -1, "vmax": 1})
        record["half 2 (odd slices)"] = (out["halves"][1], {"vmin": -1, "vmax": 1})
    return out


def preprocess_ct(
    ct: CTVolume,
    size: Sequence[int],
    spacing_mm: float,
    labels: CTVolume | None = None,
    masks: dict[str, CTVolume] | None = None,
    reader_size: Sequence[int] | None = None,
) -> dict:
    """The paper's CT preprocessing; returns ``ct`` in [−1, 1], ``lung``, each mask, ``halves``.

    ``labels`` (a TotalSegmentator map on the CT's grid) gives the lung mask when present;
    ``masks`` (e.g. ``{"clot": ...}``) follow the CT through resampling, crop and resize.
    With ``reader_size`` the same crop is also resized to it: ``ct_reader`` and
    ``<mask>_reader`` (what the CTPA-only clot reader reads, :attr:`Profile.reader_size`).
    """
    return _steps(ct, size, spacing_mm, labels, masks, None, reader_size)


def preprocess_ct_steps(
    ct: CTVolume, size: Sequence[int], spacing_mm: float, labels: CTVolume | None = None
) -> dict[str, tuple[np.ndarray, dict]]:
    """Every intermediate volume of :func:`preprocess_ct` with display limits, in order."""
    record: dict = {}
    _steps(ct, size, spacing_mm, labels, None, record)
    return record


def preprocess_cxr(img: np.ndarray, size: int) -> np.ndarray:
    """Chest X-ray → (3, size, size) float32 in [0, 1].

    Clips to the 0.5–99.5 percentiles (robust to burned-in text and collimator edges),
    rescales to [0, 1], resizes with area averaging (MONAI) and repeats to three channels.
    """
    from monai.transforms import Resize

    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D X-ray, got shape {img.shape}")
    lo, hi = np.percentile(img, [0.5, 99.5])
    x = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    mode = "area" if min(img.shape) >= size else "bilinear"
    x = Resize((size, size), mode=mode)(torch.from_numpy(x)[None])[0]
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.repeat(x[None], 3, axis=0)


def read_and_preprocess_cxr(cxr_path: str | Path, size: int) -> torch.Tensor:
    """Read a CXR (DICOM/PNG/JPEG) and preprocess it to (3, S, S); errors name the file."""
    cxr_path = Path(cxr_path)
    if not cxr_path.is_file():
        what = "is a folder, not an image" if cxr_path.is_dir() else "does not exist"
        raise FileNotFoundError(f"chest X-ray {cxr_path} {what}")
    try:
        img = read_cxr(cxr_path)
    except DataError:
        raise
    except Exception as e:  # the reader's own error, with the file named
        raise DataError(
            cxr_path, f"cannot be read as a chest X-ray ({type(e).__name__}: {e})"
        ) from e
    arr = np.asarray(img)
    if arr.ndim != 2 or min(arr.shape) < 8 or not np.isfinite(arr).all():
        raise DataError(cxr_path, f"expected a finite 2D image, got shape {arr.shape}")
    x = torch.as_tensor(np.asarray(preprocess_cxr(img, size), dtype=np.float32))
    if x.shape != (3, size, size):
        raise DataError(cxr_path, f"preprocessed to {tuple(x.shape)}, not (3, {size}, {size})")
    return x
