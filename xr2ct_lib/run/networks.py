"""Which VAE, CXR encoder and denoiser a run uses: the one answer every chapter asks.

``RunConfig.weights`` (the notebooks' ``weights`` parameter) chooses:

- ``"trained"``: this run's own networks: chapter 2's VAE (``models/vae``), chapter 3's
  encoder (``models/encoder``) and chapter 4's live-trained denoiser (``models/bundle``);
  latents in ``latents/``, embeddings in ``embeddings/``;
- ``"shipped"``: a bundle trained by ``xr2ct train`` with the long schedule (its
  provenance is checked first): ``<run_dir>/bundle`` when the run folder holds one (a
  user's own cohort: ``xr2ct train --run-dir`` writes it there), else ``weights/<profile>/``
  (``make weights``, the embedded cohort's). The latents and X-ray embeddings
  that later chapters read are then made with that bundle's VAE and encoder, so the
  shipped denoiser and the classifiers that read generated latents share one latent space;
  they live in ``shipped/latents`` and ``shipped/embeddings`` and are rebuilt when the
  bundle changes.

:attr:`Networks.key` (the bundle's fingerprint) identifies the weights and belongs in every
cache key built on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xr2ct_lib.config import WEIGHTS_DIR, RunConfig
from xr2ct_lib.models import bundle as B


@dataclass(frozen=True)
class Networks:
    """The networks of one run and where their latents and embeddings are cached."""

    weights: str  # "shipped" or "trained"
    bundle: Path  # the generation bundle (denoiser, VAE, encoder, normaliser)
    vae: Path
    encoder: Path
    latents: Path
    embeddings: Path
    key: str
    provenance: dict | None = None

    @property
    def denoiser(self) -> Path:
        return self.bundle / "denoiser"

    def describe(self) -> str:
        """Names the bundle, for every figure's and table's provenance line."""
        if self.weights == "trained":
            return "networks trained in this run (chapters 2–4; in-book stand-in VAE and encoder)"
        prov = self.provenance or {}
        sched = prov.get("schedule", {})
        commit = (prov.get("code", {}).get("git_commit") or "unknown")[:8]
        shipped = self.bundle.parent == WEIGHTS_DIR
        cohort = prov.get("cohort", {})
        data = "simulated cohort" if cohort.get("simulated", True) else "real-format cohort"
        kind = lambda steps: "in-book stand-in" if steps else "pretrained"  # noqa: E731
        vae, enc = kind(sched.get("vae")), kind(sched.get("encoder"))
        nets = f"{vae} VAE and encoder" if vae == enc else f"{vae} VAE, {enc} encoder"
        if "encoder" in prov:  # bundles that record what their VAE and encoder are
            nets = f"{prov.get('vae', f'{vae} VAE')}; encoder: {prov['encoder']}"
        return (
            f"{'shipped bundle' if shipped else 'bundle'} {B.show(self.bundle)} "
            f"({'`make weights`' if shipped else '`xr2ct train`'} on the {data} "
            f"{cohort.get('manifest', '?')}, {sched.get('name', '?')} schedule, diffusion "
            f"steps {sched.get('diffusion')}, code {commit}; {nets})"
        )


def shipped_bundle(profile_name: str) -> Path:
    return WEIGHTS_DIR / profile_name


def run_bundle(run_dir: Path) -> Path | None:
    """The bundle ``xr2ct train --run-dir RUN_DIR`` wrote (``RUN_DIR/bundle``), if any."""
    bundle = Path(run_dir) / "bundle"
    return bundle if (bundle / B.PROVENANCE).is_file() else None


def networks_for(cfg: RunConfig, weights: str | None = None) -> Networks:
    """The networks ``cfg`` uses (or those of ``weights``, overriding ``cfg.weights``).

    For ``shipped``, a missing bundle or one trained on another cohort generator version
    or profile stops here with one line (:class:`~xr2ct_lib.models.bundle.StaleBundleError`).
    """
    weights = weights or cfg.weights
    run = cfg.run_dir
    if weights == "trained":
        models = run / "models"
        bundle = models / "bundle"
        key = B.fingerprint(bundle) if (bundle / "denoiser").is_dir() else "no-bundle-yet"
        return Networks("trained", bundle, models / "vae", models / "encoder",
                        run / "latents", run / "embeddings", key)  # fmt: skip
    if weights != "shipped":
        raise ValueError(f"weights must be 'shipped' or 'trained', got {weights!r}")
    bundle = run_bundle(run) or shipped_bundle(cfg.profile.name)
    if not bundle.is_dir():
        raise FileNotFoundError(
            f"neither {B.show(run / 'bundle')} nor {B.show(bundle)} holds a bundle: train one "
            f"for this run folder (`xr2ct train --profile {cfg.profile.name} --manifest ... "
            f"--run-dir {B.show(run)}`), or for the embedded cohort `make weights "
            f"PROFILE={cfg.profile.name}` (hours on a CPU for workshop), or use weights='trained'"
        )
    prov = B.check_provenance(bundle, cfg.profile)
    return Networks("shipped", bundle, bundle / "vae", bundle / "encoder",
                    run / "shipped" / "latents", run / "shipped" / "embeddings",
                    B.fingerprint(bundle), prov)  # fmt: skip
