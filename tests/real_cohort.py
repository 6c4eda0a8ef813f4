"""A tiny cohort in a real cohort's formats (NIfTI CT + label map, PNG X-ray), no phantom.

The CT is a simple chest: air outside, soft tissue, two air-filled lungs, so the paper's
preprocessing (threshold lung crop) runs on it as on a real scan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image

SPACING_XYZ = (3.0, 3.0, 3.0)


def chest(shape=(24, 48, 48), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(CT in HU as int16, label map with lung lobes 10 and 13) of one simple chest."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    z, y, x = np.ogrid[:d, :h, :w]
    body = ((y - h / 2) / (0.42 * h)) ** 2 + ((x - w / 2) / (0.45 * w)) ** 2 <= 1
    body = np.broadcast_to(body, shape)
    lung = {}
    for label, cx in ((13, 0.3 * w), (10, 0.7 * w)):
        lung[label] = (
            ((z - d / 2) / (0.4 * d)) ** 2 + ((y - h / 2) / (0.28 * h)) ** 2
            + ((x - cx) / (0.14 * w)) ** 2 <= 1
        )  # fmt: skip
    ct = np.where(body, 40.0, -1000.0)
    labels = np.zeros(shape, np.uint8)
    for label, m in lung.items():
        ct[m] = -850.0
        labels[m] = label
    ct += rng.normal(0, 10, shape)
    return ct.astype(np.int16), labels


def write_volume(path: Path, array: np.ndarray) -> str:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(img, str(path), True)
    return path.name


def projection(ct: np.ndarray) -> np.ndarray:
    """A 16-bit projection of the CT along y (bone bright: attenuation sums)."""
    mu = np.clip(ct.astype(np.float32) + 1000.0, 0, None).sum(axis=1)[::-1]
    return np.round(65535 * (mu - mu.min()) / (mu.max() - mu.min())).astype(np.uint16)


def write_xray(path: Path, ct: np.ndarray) -> str:
    """The CT's :func:`projection` as a 16-bit PNG."""
    Image.fromarray(projection(ct)).save(path)
    return path.name


def write_xray_dicom(path: Path, ct: np.ndarray) -> str:
    """The CT's :func:`projection` as a 16-bit MONOCHROME1 DICOM radiograph (stored
    inverted, so that a reader honouring the photometric interpretation sees bone bright)."""
    import pydicom
    from pydicom.data import get_testdata_file

    img = projection(ct)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality = "DX"
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = np.ascontiguousarray(65535 - img).tobytes()
    ds.save_as(path)
    return path.name


def write_cohort(folder: Path, n: int = 6, labels: bool = True) -> pd.DataFrame:
    """Write ``n`` patients into ``folder``; return their manifest rows (paths relative)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        pid = f"R{i}"
        ct, lab = chest(seed=i)
        rows.append(
            {
                "patient_id": pid,
                "pe_label": i % 2,
                "fold": i % 6,
                "source": "hospital",
                "ct_path": write_volume(folder / f"{pid}_ct.nii.gz", ct),
                "cxr_path": write_xray(folder / f"{pid}_cxr.png", ct),
                "drr_path": "",
                "label_path": write_volume(folder / f"{pid}_labels.nii.gz", lab) if labels else "",
                "clot_path": "",
                "phantom_seed": "",
            }
        )
    return pd.DataFrame(rows)


def write_manifest(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path
