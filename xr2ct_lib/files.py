"""Writing files safely: one atomic writer (temp file + fsync + rename), and on it the text,
safetensors and NIfTI writers.

Every output of the library goes through :func:`atomic_write`, so a reader sees the old file
or the new one, never half of one, and a crash leaves no partial file under the final name.
Files get normal permissions (``0o666`` minus the process umask), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def sha256_file(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes: weights and manifests named in provenance records."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class FileError(ValueError):
    """A file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def inside(folder: str | Path, name: str) -> Path:
    """``folder/name``, refused with a :class:`FileError` when it resolves outside ``folder``
    (a name such as ``../ct/P05`` or an absolute path must never pick where a file goes)."""
    folder = Path(folder)
    target = folder / name
    root = folder.resolve()
    resolved = target.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise FileError(target, f"{name!r} would write outside {folder}; refused")
    return target


def current_umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``; else a brief set/reset)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# the temporary names of atomic_write, checkpoint._write, write_bundle and replace_dir:
# "." + the target's name + "." + tempfile's 8 random characters (+ "old." / a suffix)
TEMPORARY = re.compile(r"\..+\.(old\.)?[a-z0-9_]{8}(\.[A-Za-z0-9.]+)?")


def remove_temporaries(root: str | Path) -> list[Path]:
    """Delete what writes killed mid-way left under ``root`` (their temporary names); call it
    only while no other process writes there (``xr2ct train`` holds its lock). Returns them."""
    import shutil

    found = [p for p in Path(root).rglob(".*") if TEMPORARY.fullmatch(p.name)]
    for p in sorted(found, key=lambda p: len(p.parts)):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def atomic_write(path: str | Path, write: Callable[[str], object], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, fsync it, rename it over ``path``.

    ``suffix`` ends the temporary name, for writers that choose the format from the extension
    (SimpleITK, PIL); by default ``.tmp``. The temporary file is removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_safetensors(
    path: str | Path, tensors: dict, metadata: dict[str, str] | None = None
) -> Path:
    """Write a flat name → tensor dict as safetensors, atomically (contiguous CPU copies)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=metadata))


def write_nifti(
    path: str | Path,
    array_zyx: np.ndarray,
    spacing_zyx: float | Sequence[float],
    origin_lps: Sequence[float] = (0.0, 0.0, 0.0),
    compress: bool = True,
) -> Path:
    """Write a (z, y, x) LPS array (identity direction) as NIfTI, atomically.

    ``spacing_zyx`` is one isotropic spacing or three (z, y, x) spacings in mm; ``origin_lps``
    is the world position (x, y, z) mm of voxel [0, 0, 0]. SimpleITK writes the matching RAS
    affine. Integer and boolean arrays keep an integer type; others are written as float32.
    """
    import SimpleITK as sitk

    a = np.asarray(array_zyx)
    if a.ndim != 3:
        raise ValueError(f"{path}: expected a 3D (z, y, x) array, got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif not np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32)
    sp = (float(spacing_zyx),) * 3 if np.isscalar(spacing_zyx) else tuple(map(float, spacing_zyx))
    if len(sp) != 3 or min(sp) <= 0:
        raise ValueError(f"{path}: spacing must be one or three positive values, got {spacing_zyx}")
    img = sitk.GetImageFromArray(np.ascontiguousarray(a))
    img.SetSpacing(sp[::-1])  # ITK order is (x, y, z)
    img.SetOrigin(tuple(float(v) for v in origin_lps))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    ext = ".nii.gz" if str(path).endswith(".gz") else ".nii"
    return atomic_write(path, lambda tmp: sitk.WriteImage(img, tmp, compress, 1), suffix=ext)
