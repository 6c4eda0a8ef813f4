"""An external cohort with a domain shift (chapter 11): the paper's LIDC experiment, simulated.

The paper adapts its model to LIDC, whose CTs differ from its CTPA cohort: no contrast,
other scanners, another field of view, and X-rays that are not radiographs of the same
moment (DRRs rendered from the CTs stand in). A thin layer on the phantom generator's
in-memory API builds such patients from the same source CT, deterministically from their
seeds; the default cohort is untouched (same code path, other seeds, nothing written to it):

- **non-contrast CT**: the patient's ``plain_hu`` (the body without iodine: the pulmonary
  arteries are not enhanced);
- **another scanner**: a smoother reconstruction kernel (Gaussian, ``kernel_sigma_vox``) and
  more noise (``noise_sd_hu``, filtered by the same kernel: correlated, not white);
- **another field of view**: a tighter in-plane crop (``fov_scale``) resized to the profile;
- **DRRs as the X-rays**: the clean canonical DRR of the non-contrast CT.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from xr2ct_lib.utils import progress

EXTERNAL_SEED_OFFSET = 900_000  # far from every manifest's phantom seeds


@dataclass(frozen=True)
class DomainShift:
    """How the external scanner and protocol differ from the cohort's."""

    contrast: bool = False
    noise_sd_hu: float = 45.0
    kernel_sigma_vox: float = 1.0
    fov_scale: float = 0.8
    xray: str = "drr"


@dataclass
class ExternalCohort:
    ids: list[str]
    labels: np.ndarray  # (N,)
    ct: np.ndarray  # (N, D, H, W) in [−1, 1]
    cxr: np.ndarray  # (N, 3, S, S) in [0, 1]: DRRs of the non-contrast CT
    shift: DomainShift


def shifted_ct(plain_hu: np.ndarray, shift: DomainShift, rng: np.random.Generator) -> np.ndarray:
    """The scanner of ``shift``: its kernel and its (kernel-filtered) noise, in HU."""
    from scipy.ndimage import gaussian_filter

    s = shift.kernel_sigma_vox
    ct = gaussian_filter(plain_hu.astype(np.float32), s) if s > 0 else plain_hu.astype(np.float32)
    noise = rng.standard_normal(plain_hu.shape).astype(np.float32)
    if s > 0:  # filtered noise, rescaled to the asked standard deviation
        noise = gaussian_filter(noise, s)
        noise /= max(float(noise.std()), 1e-6)
    return ct + shift.noise_sd_hu * noise


def narrower_fov(vol: np.ndarray, scale: float) -> np.ndarray:
    """The central ``scale`` of each slice (H, W), resized back to the volume's size."""
    from xr2ct_lib.data.preprocess import resize_volume

    if scale >= 1.0:
        return vol
    d, h, w = vol.shape
    ch, cw = max(2, round(h * scale)), max(2, round(w * scale))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return resize_volume(vol[:, y0 : y0 + ch, x0 : x0 + cw], (d, h, w))


def simulate_external(
    n: int, profile, cache_dir=None, shift: DomainShift = DomainShift(), seed: int = 0,
    pe_rate: float = 0.34,
) -> ExternalCohort:  # fmt: skip
    """``n`` external patients (every third or so with PE), preprocessed like the cohort."""
    from xr2ct_lib.data.drr import render_pair
    from xr2ct_lib.data.io import CTVolume
    from xr2ct_lib.data.phantom import load_base
    from xr2ct_lib.data.phantom.build import min_clot_z_mm, simulation_spacing_mm
    from xr2ct_lib.data.phantom.patient import simulate_patient
    from xr2ct_lib.data.preprocess import preprocess_ct, preprocess_cxr

    base = load_base(simulation_spacing_mm(profile), cache_dir)
    min_z = min_clot_z_mm(base, profile.ct_size[0])
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < pe_rate).astype(int)
    if n >= 2 and 0 < n and labels.sum() in (0, n):
        labels[0], labels[1] = 1, 0  # both classes
    ids, cts, cxrs = [], [], []
    for i in progress(range(n), desc="external patients", unit="patient", leave=False):
        ps = EXTERNAL_SEED_OFFSET + 1000 * seed + i
        p = simulate_patient(ps, int(labels[i]), base, 0, min_clot_z_mm=min_z, render=False)
        r = np.random.default_rng(ps)
        hu = p.ct_hu if shift.contrast else p.plain_hu
        hu = shifted_ct(hu, shift, r)
        sp = (base.spacing_mm,) * 3
        out = preprocess_ct(
            CTVolume(array=np.round(hu).astype(np.float32), spacing=sp, origin=p.origin_lps),
            size=profile.ct_size, spacing_mm=profile.ct_spacing_mm,
            labels=CTVolume(array=p.labels.astype(np.float32), spacing=sp, origin=p.origin_lps),
        )  # fmt: skip
        cts.append(narrower_fov(out["ct"], shift.fov_scale))
        centre, fov = tuple(base.aux["view_center_zyx"]), float(base.aux["view_fov_mm"])
        drr, _, _ = render_pair(hu, base.spacing_mm, profile.drr_size, r, centre, fov)
        cxrs.append(preprocess_cxr(drr, profile.cxr_size))
        ids.append(f"EXT{i:03d}")
    return ExternalCohort(ids, labels, np.stack(cts).astype(np.float32),
                          np.stack(cxrs).astype(np.float32), shift)  # fmt: skip


def load_or_simulate(cfg, n: int, shift: DomainShift = DomainShift()) -> ExternalCohort:
    """:func:`simulate_external`, cached in ``<run_dir>/external/`` keyed by its inputs."""
    from safetensors.torch import load_file, save_file

    from xr2ct_lib.data.phantom import GENERATOR_VERSION
    from xr2ct_lib.files import atomic_write
    from xr2ct_lib.utils import recipe_key

    key = recipe_key(kind="external", n=n, shift=asdict(shift), seed=cfg.seed,
                     generator=GENERATOR_VERSION, ct=cfg.profile.ct_size,
                     cxr=cfg.profile.cxr_size, spacing=cfg.profile.ct_spacing_mm)  # fmt: skip
    f = Path(cfg.run_dir) / "external" / f"{key}.safetensors"
    if f.is_file():
        t = load_file(str(f))
        from safetensors import safe_open

        with safe_open(str(f), "pt") as fh:
            ids = json.loads(fh.metadata()["ids"])
        return ExternalCohort(ids, t["labels"].numpy(), t["ct"].numpy(), t["cxr"].numpy(), shift)
    ext = simulate_external(n, cfg.profile, Path(cfg.run_dir) / "cache", shift, cfg.seed)
    tensors = {"ct": torch.from_numpy(ext.ct), "cxr": torch.from_numpy(ext.cxr),
               "labels": torch.from_numpy(ext.labels.astype(np.int64))}  # fmt: skip
    atomic_write(f, lambda tmp: save_file(tensors, tmp, metadata={"ids": json.dumps(ext.ids)}))
    return ext
