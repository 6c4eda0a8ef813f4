"""Profiles: one typed config that carries the run size from the parameters cell to the models.

Every size, step count, learning rate, fold choice and sampler default of a run lives in its
:class:`Profile`; code reads these fields and never branches on the profile's name.
A notebook's parameters cell sets ``profile``, ``manifest``, ``run_dir``, ``seed`` (and, from
chapter 4 on, ``weights``);
``load_config`` turns them into a :class:`RunConfig` that every library call takes (without
touching the disk); :meth:`RunConfig.save` records it when a run starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = REPO_ROOT / "data_manifest.csv"
WEIGHTS_DIR = REPO_ROOT / "weights"
HALVES = ("joint", "independent")
WEIGHTS = ("shipped", "trained")
SCHEDULES = ("short", "long")


class TrainSchedule(NamedTuple):
    """Optimiser steps of every trained part of a bundle, and the diffusion learning rates."""

    name: str
    vae: int
    encoder: int
    diffusion: tuple[int, int, int]  # unconditional, DRR-conditional, CXR-conditional
    lrs: tuple[float, float, float]


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one profile (``smoke``, ``workshop`` or ``paper``).

    Array shapes follow (depth, height, width). The paper's CT is 256×256×128 (H×W×D),
    split by alternate slices into two 64-slice halves.
    """

    name: str
    ct_size: tuple[int, int, int]  # (D, H, W) after preprocessing, before halving
    ct_spacing_mm: float  # isotropic resampling before the lung crop
    cxr_size: int  # square CXR side given to the CXR encoder (224 for BiomedCLIP)
    drr_size: int  # detector side of the rendered radiographs (pixels)
    max_patients: int | None  # cap on cohort size (balanced over folds); None = all rows
    # latent compression (2D VAE applied slice by slice)
    vae_channels: tuple[int, ...]
    vae_latent_channels: int
    vae_steps: int
    vae_batch: int
    vae_lr: float  # the stand-in VAE and the 3D compressor
    # 3D compressor for the Table 4 comparison
    ae3d_steps: int
    # CXR encoder stand-in
    cxr_embed_dim: int
    encoder_steps: int
    encoder_lr: float
    # classifiers
    classifier_epochs: int
    classifier_lr: float
    latent_classifier: str  # "densenet121" (the paper) or "scaled" (blocks fit the latent)
    # diffusion
    unet_channels: tuple[int, ...]
    diffusion_steps: int  # training timesteps of the noise schedule
    sample_steps_fast: int  # DDIM / DPM-Solver steps
    ddpm_steps: int  # DDPM sampling steps (the paper: all training timesteps)
    train_steps: tuple[int, int, int]  # unconditional, DRR-conditional, CXR-conditional
    stage_lrs: tuple[float, float, float]  # learning rate of each training stage
    batch_size: int
    # epochs of the clot-supervised CTPA classifier trained per fold when a profile has no
    # pretrained clot reader (each: every clot slice of the training folds and twice as many
    # slices without clot)
    clot_epochs: int = 8
    # (D, H, W) of the CT the CTPA-only clot reader reads: the same lung crop as ct_size but
    # near the CT's own spacing, as the paper's INSPECT reads every original slice while the
    # generator works at ct_size (Table 7); None = ct_size
    reader_ct_size: tuple[int, int, int] | None = None
    # what the denoiser predicts: "epsilon" (the paper) or "sample" (x0: the in-book runs'
    # few hundred CPU steps reach the average anatomy this way, not with ε)
    prediction_type: str = "epsilon"
    # how the denoiser takes the X-ray embedding: None (the reference: raw, beside the
    # timestep embedding) or "projection" (standardised, then an MLP; the in-book encoders'
    # trunk features and finding probabilities differ in scale by an order of magnitude)
    cond_embed_type: str | None = None
    # folds: the stratified cross-validation, and the one split chapters 2–7 train and test on
    n_folds: int = 6
    test_fold: int = 0  # its validation fold is (test_fold + 1) % n_folds
    cv_folds: tuple[int, ...] | None = None  # test folds the classifiers' CV runs; None = all
    # how the two half volumes (even / odd slices) are diffused: "independent" (the paper:
    # each half is a sample of C channels) or "joint" (both halves are the 2C channels of one
    # sample, so they are denoised together and agree: no stripes between them)
    halves: str = "independent"
    # kernel of the denoiser's ResNet convolutions: (1, 3, 3) within slices, as the
    # reference's video U-Net (slices exchange information through temporal attention)
    unet_kernel: tuple[int, int, int] = (1, 3, 3)
    # the fast sampler the book generates with
    sampler: str = "ddim"
    # the "long" schedule of `make weights` (the shipped bundle); the fields above
    # (vae_steps, encoder_steps, train_steps, stage_lrs) are the "short" one trained live
    vae_steps_long: int = 0
    encoder_steps_long: int = 0
    train_steps_long: tuple[int, int, int] = (0, 0, 0)
    stage_lrs_long: tuple[float, float, float] = (1e-4, 1e-4, 1e-5)
    # chapter 10: (DRR, X-ray) steps every ablation variant trains from the shared
    # unconditional checkpoint, and how many test-fold patients it generates (None: all)
    ablation_steps: tuple[int, int] = (1, 1)
    ablation_patients: int | None = None
    # chapter 11: external patients (adaptation split, test split), adaptation steps, LoRA rank
    external_patients: tuple[int, int] = (3, 4)
    adapt_steps: int = 3
    lora_rank: int = 4

    def __post_init__(self):
        if self.halves not in HALVES:
            raise ValueError(f"profile {self.name}: halves must be one of {HALVES}")
        if not 0 <= self.test_fold < self.n_folds:
            raise ValueError(
                f"profile {self.name}: test_fold {self.test_fold} not in 0..{self.n_folds - 1}"
            )
        if self.cv_folds is not None and not set(self.cv_folds) <= set(range(self.n_folds)):
            raise ValueError(
                f"profile {self.name}: cv_folds {self.cv_folds} not in 0..{self.n_folds - 1}"
            )
        if self.latent_classifier not in ("densenet121", "scaled"):
            raise ValueError(
                f"profile {self.name}: latent_classifier must be 'densenet121' or 'scaled'"
            )

    def denoiser_recipe(self) -> dict:
        """What of the profile shapes a trained denoiser, as recipe-key fields (the keys of
        :func:`~xr2ct_lib.utils.recipe_key` that identify a training run and its checkpoints)."""
        fields = {"prediction": self.prediction_type, "halves": self.halves,
                  "batch": self.batch_size}  # fmt: skip
        if self.cond_embed_type:
            fields["cond_embed"] = self.cond_embed_type
        return fields

    @property
    def reader_size(self) -> tuple[int, int, int]:
        """(D, H, W) of the CT the clot reader reads: ``reader_ct_size``, else ``ct_size``."""
        return tuple(self.reader_ct_size or self.ct_size)

    @property
    def cv_test_folds(self) -> tuple[int, ...]:
        """The test folds the cross-validations run (all ``n_folds`` unless ``cv_folds``)."""
        return tuple(range(self.n_folds)) if self.cv_folds is None else tuple(self.cv_folds)

    @property
    def halves_per_sample(self) -> int:
        """Half volumes in one diffusion sample: 2 (joint) or 1 (independent)."""
        return 2 if self.halves == "joint" else 1

    @property
    def diffusion_shape(self) -> tuple[int, int, int, int]:
        """(C', D, h, w) of one diffusion sample: C' = 2C (joint halves) or C (independent)."""
        c, d, h, w = self.latent_shape
        return (c * self.halves_per_sample, d, h, w)

    def schedule(self, name: str = "short") -> TrainSchedule:
        """The ``short`` (the book's live run) or ``long`` (the shipped bundle) schedule."""
        if name == "short":
            return TrainSchedule(
                name, self.vae_steps, self.encoder_steps, tuple(self.train_steps),
                tuple(self.stage_lrs),
            )  # fmt: skip
        if name == "long":
            return TrainSchedule(
                name, self.vae_steps_long, self.encoder_steps_long,
                tuple(self.train_steps_long), tuple(self.stage_lrs_long),
            )  # fmt: skip
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")

    @property
    def half_size(self) -> tuple[int, int, int]:
        """Shape of one half volume (every other slice)."""
        d, h, w = self.ct_size
        return (d // 2, h, w)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(C, D, h, w) of a half volume's latent; the VAE downsamples H and W only."""
        f = 2 ** (len(self.vae_channels) - 1)
        d, h, w = self.half_size
        return (self.vae_latent_channels, d, h // f, w // f)

    @property
    def latent_compression(self) -> float:
        """Values of a half volume (one grey value per voxel) over values of its latent.

        The SD VAE reads RGB slices (the grey slice repeated three times): counted in those
        channels the factor is three times this, but the repeats carry no information.
        """
        return math.prod(self.half_size) / math.prod(self.latent_shape)


# The in-book profiles train for a few hundred steps, not 250 000: a larger learning rate
# (still decreasing stage by stage, as the paper's) gets somewhere in that budget.
INBOOK_STAGE_LRS = (1e-3, 5e-4, 2e-4)

# What the two in-book profiles share: small stand-in networks trained live at the in-book
# learning rates, a denoiser that predicts x0 and halves diffused jointly. The paper
# profile keeps the paper's choices.
IN_BOOK = dict(
    vae_channels=(16, 32, 32),
    vae_latent_channels=4,
    vae_lr=2e-3,
    cxr_embed_dim=512,
    encoder_lr=1e-3,
    classifier_lr=1e-3,
    latent_classifier="scaled",
    diffusion_steps=1000,
    stage_lrs=INBOOK_STAGE_LRS,
    prediction_type="sample",
    cond_embed_type="projection",
    halves="joint",
)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        **IN_BOOK,
        ct_size=(32, 32, 32),
        ct_spacing_mm=4.0,  # the 32³ lung crop has ≈ 6 mm voxels
        cxr_size=64,
        drr_size=64,
        max_patients=24,
        vae_steps=30,
        vae_batch=32,
        ae3d_steps=20,
        encoder_steps=20,
        classifier_epochs=2,
        clot_epochs=2,
        reader_ct_size=(48, 40, 48),  # the same crop at ≈ 5–6 mm
        unet_channels=(16, 32),
        # DDIM quality saturates by ~3 steps with x0-prediction (benchmarks/sampler_sweep.py
        # on weights/smoke, 8 held-out patients: SSIM 0.295 / 0.340 / 0.347 / 0.354 at 1 / 3
        # / 5 / 25 steps)
        sample_steps_fast=3,
        ddpm_steps=50,  # strided DDPM: CI cannot afford 1000 steps
        train_steps=(10, 10, 10),
        batch_size=4,
        cv_folds=(0, 1),  # two folds keep CI short
        vae_steps_long=60,
        encoder_steps_long=40,
        train_steps_long=(30, 30, 60),
        stage_lrs_long=INBOOK_STAGE_LRS,
        ablation_steps=(1, 1),
    ),
    "workshop": Profile(
        name="workshop",
        **IN_BOOK,
        ct_size=(64, 64, 64),
        ct_spacing_mm=3.0,  # the 64³ lung crop has ≈ 3–4.5 mm voxels
        reader_ct_size=(96, 72, 96),  # the lung crop at ≈ 3 mm (≈ 90×68×88 voxels before resizing)
        cxr_size=128,
        drr_size=128,
        max_patients=None,
        vae_steps=200,  # the live slice VAE of chapters 2–4; chapter 5 on use the shipped one
        vae_batch=16,
        ae3d_steps=150,
        encoder_steps=300,
        classifier_epochs=15,
        unet_channels=(32, 64, 128),
        # a few DDIM steps suffice with x0-prediction: benchmarks/sampler_sweep.py
        sample_steps_fast=4,
        ddpm_steps=200,  # strided DDPM in chapter 6: 1000 steps take ~100 s per volume
        train_steps=(20, 20, 40),  # chapter 4's live run
        batch_size=2,  # the paper's batch size
        # `make weights` (the shipped bundle): about 2 hours on one CPU core (0.44 s per
        # diffusion step, 0.36 s per VAE step)
        vae_steps_long=3000,
        encoder_steps_long=2000,
        train_steps_long=(1500, 2500, 8000),
        stage_lrs_long=(5e-4, 3e-4, 1e-4),
        # chapter 10 within ≈ 80 s: a full-loss step costs several L1 steps (LPIPS,
        # discriminator, classifier on decoded slices)
        ablation_steps=(2, 2),
        ablation_patients=6,
        external_patients=(3, 4),
        adapt_steps=10,
    ),
    "paper": Profile(
        name="paper",
        ct_size=(128, 256, 256),
        ct_spacing_mm=1.0,
        cxr_size=224,
        drr_size=256,
        max_patients=None,
        vae_channels=(128, 256, 512, 512),
        vae_latent_channels=4,
        vae_steps=0,  # the frozen SD VAE is used as is
        vae_batch=16,
        vae_lr=2e-3,
        ae3d_steps=0,
        cxr_embed_dim=512,
        encoder_steps=0,  # frozen BiomedCLIP
        encoder_lr=1e-3,
        classifier_epochs=50,
        classifier_lr=1e-3,
        latent_classifier="densenet121",
        unet_channels=(64, 128, 256, 512),
        diffusion_steps=1000,
        sample_steps_fast=50,
        ddpm_steps=1000,
        train_steps=(100_000, 50_000, 100_000),
        stage_lrs=(1e-4, 1e-4, 1e-5),  # the paper's Implementation details
        batch_size=2,
        halves="independent",
        train_steps_long=(100_000, 50_000, 100_000),
        stage_lrs_long=(1e-4, 1e-4, 1e-5),
    ),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything a library call needs: profile, cohort manifest, output directory, seed."""

    profile: Profile
    manifest: Path
    run_dir: Path
    seed: int = 0
    # which networks chapters 4+ use: "shipped" (the bundle in weights/<profile>/, trained
    # long by `make weights`; the default, as in the notebooks) or "trained" (this run's own:
    # chapters 2–4 train them live, and chapters 1–3 ask for them explicitly)
    weights: str = "shipped"

    def __post_init__(self):
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {self.weights!r}")

    def path(self, *parts: str) -> Path:
        """A path inside the run directory, its parent created."""
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def to_dict(self) -> dict:
        return {
            "profile": dataclasses.asdict(self.profile),
            "manifest": str(self.manifest),
            "run_dir": str(self.run_dir),
            "seed": self.seed,
            "weights": self.weights,
        }

    def describe(self) -> str:
        """One line for figure captions and table footers."""
        return (
            f"profile={self.profile.name}, seed={self.seed}, manifest={self.manifest.name}, "
            f"weights={self.weights}"
        )

    def save(self) -> Path:
        """Record the run's config as ``<run_dir>/config.json`` (where a run starts)."""
        from xr2ct_lib.files import atomic_write_text

        return atomic_write_text(self.run_dir / "config.json", json.dumps(self.to_dict(), indent=2))


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def load_config(
    profile: str = "workshop",
    manifest: str | Path | None = None,
    run_dir: str | Path | None = None,
    seed: int = 0,
    weights: str = "shipped",
) -> RunConfig:
    """Build the run config from the notebook parameters; nothing is written.

    ``run_dir`` defaults to ``runs/<profile>`` at the repository root; relative paths are
    taken from the repository root, so notebooks run from ``notebooks/`` or from papermill
    find the same files.
    """
    prof = get_profile(profile)
    manifest = Path(manifest) if manifest else DEFAULT_MANIFEST
    if not manifest.is_absolute():
        manifest = REPO_ROOT / manifest
    run_dir = Path(run_dir) if run_dir else REPO_ROOT / "runs" / prof.name
    if not run_dir.is_absolute():
        run_dir = REPO_ROOT / run_dir
    return RunConfig(
        profile=prof, manifest=manifest, run_dir=run_dir, seed=int(seed), weights=weights
    )
