"""The one place that knows where a run keeps the images the reader study shows.

A run directory holds ``prepared/index.csv`` + ``prepared/<pid>.safetensors`` (``ct`` (D,H,W)
in [−1, 1], ``cxr`` (3,S,S) in [0, 1]) and ``generated/<pid>.safetensors`` (``ct``). When the
generation code moves its cache, only :func:`gather_cases` changes; the kit builder takes
plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open

from xr2ct_lib.data.cohort import PreparedCohort


@dataclass
class RunCases:
    """Labels of every prepared patient, which have a generated CTPA, and their images."""

    run_dir: Path
    labels: dict[str, int]
    generated_ids: list[str]
    cohort: PreparedCohort
    generated_dir: Path

    def cxr(self, pid: str) -> np.ndarray:
        """The preprocessed X-ray, (S, S) in [0, 1]."""
        x = self.cohort.load(pid)["cxr"]
        return x[0] if x.ndim == 3 else x

    def real_ct(self, pid: str) -> np.ndarray:
        """The preprocessed CTPA, (D, H, W) in [−1, 1]."""
        return self.cohort.load(pid)["ct"]

    def generated_ct(self, pid: str) -> np.ndarray:
        """The CTPA generated from the patient's X-ray, (D, H, W) in [−1, 1]."""
        path = self.generated_dir / f"{pid}.safetensors"
        with safe_open(str(path), framework="numpy") as f:
            if "ct" not in f.keys():
                raise KeyError(f"{path}: no 'ct' volume (keys: {sorted(f.keys())})")
            return f.get_tensor("ct")


def gather_cases(run_dir: str | Path) -> RunCases:
    """Read a run directory's prepared cohort and list its generated volumes."""
    run_dir = Path(run_dir)
    cohort = PreparedCohort(run_dir)
    labels = dict(zip(cohort.ids, (int(v) for v in cohort.labels), strict=True))
    gen_dir = run_dir / "generated"
    found = sorted(p.stem for p in gen_dir.glob("*.safetensors")) if gen_dir.is_dir() else []
    return RunCases(run_dir, labels, [p for p in found if p in labels], cohort, gen_dir)


def describe_run(run_dir: str | Path) -> str:
    """What the participants are told about the images: the run's cohort and its generator."""
    import json
    from types import SimpleNamespace

    from xr2ct_lib.viz.provenance import data_description

    try:
        manifest = json.loads((Path(run_dir) / "config.json").read_text())["manifest"]
        data = data_description(SimpleNamespace(manifest=Path(manifest)))
    except (OSError, KeyError, ValueError):
        data = "a cohort of unknown source"
    return f"Images: {data}. Generated CTPA: made from each X-ray by this run's X-ray2CTPA model."
