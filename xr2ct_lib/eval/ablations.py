"""Chapter 10's measurements: variants of the generator compared on held-out patients.

- :func:`generate_set`: one volume per patient with a pipeline (seeded as chapter 5), or
  unconditional samples (the branch point: a clearly worse control);
- :func:`trained_slice_features` / :func:`frechet_2p5d`: a Fréchet distance on features of a
  network trained in the book, the slice VAE's encoder (trained on the training folds' CT
  slices), on slices of the three planes, in the spirit of MAISI's RadImageNet 2.5D FID;
- :func:`variant_table`: PSNR, SSIM, LPIPS-standin, FD-standin, FD-VAE-2.5D and the
  generated-CTPA AUC of each variant, each with a 95 % interval over patients (bootstrap,
  the same resamples for every row; jackknife for the Fréchet distances), so a difference
  smaller than the interval is read as noise;
- :func:`halves_table`: joint vs independent halves: chapter 5's neighbour-slice gap
  (:func:`xr2ct_lib.eval.fidelity.neighbour_gap`), SSIM and time per volume.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from xr2ct_lib.config import RunConfig
from xr2ct_lib.eval.frechet import frechet_distance_from_features, volume_features
from xr2ct_lib.eval.perceptual import PLANES, lpips, plane_slices
from xr2ct_lib.eval.pixel_metrics import psnr, ssim
from xr2ct_lib.eval.stats import auc_or_nan
from xr2ct_lib.models import halves as H
from xr2ct_lib.utils import Skipped, progress

N_BOOT = 500


@torch.no_grad()
def generate_set(cfg: RunConfig, pipe, ids: list[str], conditional: bool = True) -> dict:
    """``{"ct": (N, D, H, W), "z": (N, 2, C, d, h, w), "seconds": (N,)}`` for ``ids``.

    Noise seeds are chapter 5's (:func:`~xr2ct_lib.generation.cache.patient_seed`); with
    ``conditional=False`` the X-ray is ignored (the condition is dropped).
    """
    from xr2ct_lib.data.cohort import PreparedCohort
    from xr2ct_lib.generation.cache import patient_seed

    p = cfg.profile
    cohort = PreparedCohort(cfg.run_dir)
    cts, zs, secs = [], [], []
    for pid in progress(ids, desc="generate", unit="volume", leave=False):
        gen = torch.Generator().manual_seed(patient_seed(cfg, cohort.ids.index(pid)))
        t0 = time.perf_counter()
        if conditional:
            cxr = torch.from_numpy(cohort.load(pid)["cxr"][None])
            out = pipe(cxr, num_inference_steps=p.sample_steps_fast, sampler=p.sampler,
                       generator=gen)  # fmt: skip
            z, ct = out.latents, out.volumes
        else:
            k = H.samples_per_volume(p.halves)
            x = pipe.denoise(
                cond=None,
                batch=k,
                num_inference_steps=p.sample_steps_fast,
                generator=gen,
                sampler=p.sampler,
            )
            z = pipe.normalizer.denormalize(H.from_diffusion(x.float().cpu(), p.halves,
                                                             p.latent_shape[0]))  # fmt: skip
            ct = pipe.decode(z)
        secs.append(time.perf_counter() - t0)
        cts.append(ct[0])
        zs.append(np.asarray(z[0], dtype=np.float32))
    return {"ct": np.stack(cts), "z": np.stack(zs), "seconds": np.array(secs)}


# ------------------------------------------------------------------ trained 2.5D features
@torch.no_grad()
def trained_slice_features(vae, volumes: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Per plane, (N, S, 2K) features of every slice: the mean and standard deviation over
    space of the slice VAE encoder's last feature map (before the latent projection).

    The encoder was trained in the book on CT slices of the training folds; the features
    are what it learnt to describe a slice with. Volumes (N, D, H, W) in [−1, 1].
    """
    enc = vae.autoencoder.encoder
    dev = next(enc.parameters()).device
    out = {}
    for plane in PLANES:
        per_vol = []
        for v in volumes:
            s = plane_slices(torch.as_tensor(v, dtype=torch.float32)[None], plane, None)
            feats = []
            for i in range(0, len(s), batch):
                x = s[i : i + batch].to(dev).expand(-1, vae.image_channels, -1, -1)
                h = enc.conv_in(x)
                for block in enc.down_blocks:
                    h = block(h)
                h = enc.mid_block(h)
                feats.append(torch.cat([h.mean((2, 3)), h.std((2, 3))], 1).double().cpu())
            per_vol.append(torch.cat(feats).numpy())
        out[plane] = np.stack(per_vol)
    return out


def frechet_2p5d(real: dict[str, np.ndarray], fake: dict[str, np.ndarray], idx=None) -> float:
    """Mean over planes of the Fréchet distance between all slices' features of the real and
    generated volumes (``idx``: the patients to use, e.g. a bootstrap resample)."""
    vals = []
    for plane in PLANES:
        r, f = real[plane], fake[plane]
        if idx is not None:
            r, f = r[idx], f[idx]
        vals.append(frechet_distance_from_features(r.reshape(-1, r.shape[-1]),
                                                   f.reshape(-1, f.shape[-1])))  # fmt: skip
    return float(np.mean(vals))


# ------------------------------------------------------------------------- the table
def _interval(boots: np.ndarray) -> tuple[float, float]:
    """95 % percentile bootstrap interval."""
    boots = boots[np.isfinite(boots)]
    if len(boots) < 10:
        return float("nan"), float("nan")
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(lo), float(hi)


def _jackknife_interval(fn, n: int, point: float) -> tuple[float, float]:
    """θ̂ ± 1.96 leave-one-patient-out jackknife standard errors (not below 0).

    For the Fréchet distances: a bootstrap resample repeats patients, which biases a
    distance between feature distributions upwards; leaving one out repeats none.
    """
    with warnings.catch_warnings():  # small sets: singular covariances, said once already
        warnings.simplefilter("ignore", UserWarning)
        vals = np.array([fn(np.delete(np.arange(n), i)) for i in range(n)])
    se = float(np.sqrt((n - 1) / n * np.sum((vals - vals.mean()) ** 2)))
    return max(0.0, point - 1.96 * se), point + 1.96 * se


@dataclass
class VariantTable:
    """Point values and 95 % bootstrap limits (rows × metrics), and the table as shown."""

    values: pd.DataFrame
    lo: pd.DataFrame
    hi: pd.DataFrame
    n: int

    def shown(self, digits: int = 3) -> pd.DataFrame:
        def cell(v, lo, hi):
            if not np.isfinite(v):
                return "n/a"
            if not np.isfinite(lo):
                return f"{v:.{digits}g}"
            return f"{v:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"

        out = self.values.copy().astype(object)
        for r in self.values.index:
            for c in self.values.columns:
                out.loc[r, c] = cell(self.values.loc[r, c], self.lo.loc[r, c], self.hi.loc[r, c])
        return out


def variant_table(
    real: np.ndarray,
    rows: dict[str, dict],
    vae,
    labels: np.ndarray | None = None,
    scores: dict[str, np.ndarray] | None = None,
    fd_net=None,
    lpips_net=None,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> VariantTable:
    """Every metric of every row, with a 95 % interval over patients: percentile bootstrap
    for the per-patient means and the AUC, jackknife for the Fréchet distances.

    ``real`` (N, D, H, W); ``rows`` name → ``{"ct": (N, D, H, W)}`` in the same patient
    order; ``scores`` name → PE scores of the generated volumes (for the AUC; ``labels``
    the truth). The same bootstrap resamples of patients are used for every row and column.
    """
    from xr2ct_lib.eval import standins
    from xr2ct_lib.eval.metrics import BOOK_LPIPS

    fd_net = standins.fvd_net() if fd_net is None else fd_net
    lpips_net = standins.lpips_net() if lpips_net is None else lpips_net
    n = len(real)
    rng = np.random.default_rng(seed)
    boots = [rng.integers(0, n, n) for _ in range(n_boot)]
    f_real = volume_features(real[:, None], fd_net)
    t_real = trained_slice_features(vae, real)
    values, lo, hi = {}, {}, {}
    for name, r in progress(rows.items(), desc="metrics", unit="row", leave=False):
        fake = r["ct"]
        per = {
            "PSNR": psnr(fake[:, None], real[:, None]),
            "SSIM": ssim(fake[:, None], real[:, None]),
            "LPIPS-standin": lpips(fake[:, None], real[:, None], lpips_net, **BOOK_LPIPS).values,
        }
        point = {k: float(np.mean(v)) for k, v in per.items()}
        bs = {k: np.array([np.mean(v[b]) for b in boots]) for k, v in per.items()}
        f_fake = volume_features(fake[:, None], fd_net)
        t_fake = trained_slice_features(vae, fake)
        fds = {
            "FD-standin": lambda i, a=f_fake: frechet_distance_from_features(f_real[i], a[i]),
            "FD-VAE-2.5D": lambda i, a=t_fake: frechet_2p5d(t_real, a, i),
        }
        limits = {}
        for k, fn in fds.items():
            with warnings.catch_warnings():  # few volumes: singular covariances (see the text)
                warnings.simplefilter("ignore", UserWarning)
                point[k] = fn(np.arange(n))
            limits[k] = _jackknife_interval(fn, n, point[k])
        if scores is not None and labels is not None and name in scores:
            s = np.asarray(scores[name])
            point["AUC (generated)"] = auc_or_nan(labels, s)
            bs["AUC (generated)"] = np.array([auc_or_nan(labels[b], s[b]) for b in boots])
        values[name] = point
        limits.update({k: _interval(bs[k]) for k in bs})
        lo[name] = {k: limits[k][0] for k in point}
        hi[name] = {k: limits[k][1] for k in point}
    frame = lambda d: pd.DataFrame(d).T.astype(float)  # noqa: E731
    return VariantTable(frame(values), frame(lo), frame(hi), n)


LOWER_IS_BETTER = {"PSNR": False, "SSIM": False, "LPIPS-standin": True, "FD-standin": True,
                   "FD-VAE-2.5D": True, "AUC (generated)": False}  # fmt: skip


def separation(t: VariantTable, reference: str, worse: list[str]) -> pd.DataFrame:
    """For each metric and each clearly worse row: "separates" when the worse row is worse
    than ``reference`` and ``reference``'s value lies outside the worse row's interval."""
    out = {}
    for w in worse:
        row = {}
        for m in t.values.columns:
            a, b = t.values.loc[reference, m], t.values.loc[w, m]
            if not (np.isfinite(a) and np.isfinite(b)):
                row[m] = "n/a"
                continue
            right_way = (b > a) if LOWER_IS_BETTER.get(m, False) else (b < a)
            outside = not (t.lo.loc[w, m] <= a <= t.hi.loc[w, m])
            if right_way:
                row[m] = "separates" if outside else "same direction, within the interval"
            else:
                row[m] = "does not separate"
        out[f"{w} vs {reference}"] = row
    return pd.DataFrame(out).T


# ------------------------------------------------------------------------ halves
def halves_table(real: np.ndarray, rows: dict[str, dict]) -> pd.DataFrame:
    """Neighbour-slice gap (generated and ground truth), SSIM and seconds per volume (a row's
    ``seconds``; NaN when its volumes were reused from a cache)."""
    gt = _gaps(real)
    out = {"ground truth": {"neighbour-slice gap": f"{gt.mean():.3f} ± {gt.std(ddof=1):.3f}"}}
    for name, r in rows.items():
        g = _gaps(r["ct"])
        s = ssim(r["ct"][:, None], real[:, None])
        out[name] = {"neighbour-slice gap": f"{g.mean():.3f} ± {g.std(ddof=1):.3f}",
                     "SSIM": f"{s.mean():.3f} ± {s.std(ddof=1):.3f}",
                     "s / volume": f"{np.mean(r['seconds']):.2f}"}  # fmt: skip
    return pd.DataFrame(out).T.fillna("")


def _gaps(volumes: np.ndarray) -> np.ndarray:
    from xr2ct_lib.eval.fidelity import neighbour_gap

    return np.array([neighbour_gap(v) for v in volumes])


def gap_ratio(generated: np.ndarray, real: np.ndarray) -> float:
    """Mean neighbour-slice gap of ``generated`` volumes over that of the ``real`` ones."""
    return float(_gaps(generated).mean() / _gaps(real).mean())


def halves_bundles(cfg: RunConfig) -> dict[str, object]:
    """The equal-schedule pair ``weights/<profile>-halves-{joint,independent}`` that is
    there (trained by ``xr2ct train --halves H --diffusion-steps ...``), as pipelines by
    layout; each is loaded with its provenance checked against the run's profile."""
    import dataclasses

    from xr2ct_lib.config import HALVES, WEIGHTS_DIR
    from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline

    out = {}
    for h in HALVES:
        d = WEIGHTS_DIR / f"{cfg.profile.name}-halves-{h}"
        if (d / "provenance.json").is_file():
            layout = dataclasses.replace(cfg.profile, halves=h)
            out[h] = XRay2CTPAPipeline.from_pretrained(d, layout)
    return out


def schedule_text(pipe) -> str:
    """``"uncond 300 + drr 500 + cxr 1600 steps"``: a bundle's diffusion training, from its
    provenance."""
    from xr2ct_lib.train.latent_data import STAGES

    steps = (pipe.provenance or {}).get("schedule", {}).get("diffusion")
    if not steps:
        return "diffusion steps not recorded"
    return " + ".join(f"{st} {n}" for st, n in zip(STAGES, steps, strict=True)) + " steps"


def generated_pe_scores(cfg: RunConfig, z: np.ndarray, ids: list[str]) -> np.ndarray:
    """PE scores of generated latents (N, 2, C, d, h, w) of test-fold patients ``ids``, read
    by chapter 8's latent classifier of the test fold (trained on real CTPA, never on them;
    it raises if it saw one of them)."""
    from xr2ct_lib.eval.classifier_cv import predict_with_fold_models
    from xr2ct_lib.run.latents import load_normalizer

    zn = load_normalizer(cfg).normalize(np.asarray(z)).astype(np.float32)
    return predict_with_fold_models(cfg, zn, np.full(len(zn), cfg.profile.test_fold), ids)


def balanced_subset(ids: list[str], labels, n: int | None) -> list[str]:
    """``n`` of ``ids`` (all when None), PE and non-PE patients alternating so that both
    classes are in (the AUC needs them); deterministic."""
    if n is None or n >= len(ids):
        return list(ids)
    labels = np.asarray(labels)
    pos = [p for p, y in zip(ids, labels, strict=True) if y == 1]
    neg = [p for p, y in zip(ids, labels, strict=True) if y == 0]
    out = []
    while len(out) < n and (pos or neg):
        for group in (pos, neg):
            if group and len(out) < n:
                out.append(group.pop(0))
    return [p for p in ids if p in out]


def noisy_truth(real: np.ndarray, sigma: float, seed: int) -> dict:
    """The ground truth plus Gaussian noise of ``sigma`` ([−1, 1] units), clipped: a control
    that every metric should place below the ground truth itself."""
    rng = np.random.default_rng(seed)
    noisy = np.clip(real + rng.normal(0.0, sigma, real.shape), -1, 1).astype(np.float32)
    return {"ct": noisy, "seconds": np.zeros(len(real))}


def generator_set(cfg: RunConfig, pipe, ids: list[str]) -> dict:
    """The generator's volumes of ``ids``: chapter 5's cached ones when it made them all (same
    seeds and sampler), else generated now (``seconds`` NaN when reused)."""
    from xr2ct_lib.eval.generated import load_generated

    gen = load_generated(cfg)
    if all(p in gen for p in ids):
        return {"ct": np.stack([gen[p]["ct"] for p in ids]),
                "z": np.stack([gen[p]["z"] for p in ids]).astype(np.float32),
                "seconds": np.full(len(ids), np.nan)}  # fmt: skip
    return generate_set(cfg, pipe, ids)


# ------------------------------------------------------------------- chapter 10's steps
GEN = "Generator (all stages)"
UNCOND = "Unconditional (branch point)"
NOISY = "Ground truth + noise (σ 0.2)"


def test_subset(cfg: RunConfig, cohort) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The ablation's patients: a PE-balanced subset (``ablation_patients``) of the test
    fold; their ids, labels and real volumes."""
    p = cfg.profile
    test = cohort.split_ids(p, "test")
    ids = balanced_subset(test, [cohort.labels[cohort.ids.index(i)] for i in test],
                          p.ablation_patients)  # fmt: skip
    labels = np.array([cohort.labels[cohort.ids.index(i)] for i in ids])
    real = np.stack([cohort.load(i)["ct"] for i in ids])
    print(f"{len(ids)} of {len(test)} test-fold patients ({labels.sum()} with PE)")
    return ids, labels, real


def variant_sets(cfg: RunConfig, pipes: dict, pipe, branch_pipe, ids: list[str], real):
    """Every variant's generated set, the generator's (:data:`GEN`), the unconditional branch
    point's (:data:`UNCOND`), and their latent classifiers' PE scores; then the noisy ground
    truth (:data:`NOISY`, no scores). Returns ``(sets, scores)``."""
    rows = {name: generate_set(cfg, q, ids) for name, q in pipes.items()}
    rows[GEN] = generator_set(cfg, pipe, ids)  # chapter 5's volumes when it made them
    rows[UNCOND] = generate_set(cfg, branch_pipe, ids, conditional=False)
    scores = {name: generated_pe_scores(cfg, r["z"], ids) for name, r in rows.items()}
    rows[NOISY] = noisy_truth(real, 0.2, cfg.seed)
    return rows, scores


def paper_table3() -> pd.DataFrame:
    """The paper's Table 3 (loss rows and the full model), quoted: ``paper/table3.csv``."""
    from importlib import resources

    with resources.as_file(resources.files("xr2ct_lib.eval") / "paper" / "table3.csv") as f:
        table = pd.read_csv(f, index_col=0, dtype=str)
    table.index.name = None
    return table


def halves_sets(cfg: RunConfig, rows: dict, pipe, ids: list[str]) -> dict[str, dict]:
    """The generator's set and, when shipped, the equal-schedule pair's (joint and
    independent halves, :func:`halves_bundles`), named for the halves table."""
    p = cfg.profile
    # chapter 5's volumes carry no time: the L1 variant has the same network, sampler, steps
    label = f"{pipe.profile.halves} halves, the generator ({schedule_text(pipe)})"
    out = {label: {**rows[GEN], "seconds": rows["L1"]["seconds"]}}
    pair = halves_bundles(cfg)
    for h, q in pair.items():
        out[f"{h} halves, weights/{p.name}-halves-{h} ({schedule_text(q)})"] = generate_set(
            cfg, q, ids
        ) | {"halves": h}
    if len(pair) < 2:
        print(f"the equal-schedule pair weights/{p.name}-halves-* is not there: the generator only")
    return out


def halves_pair_networks(cfg: RunConfig, sets: dict[str, dict]) -> str:
    """The equal-schedule pair's bundles (for the provenance line), or "none"."""
    return ", ".join(f"weights/{cfg.profile.name}-halves-{r['halves']}" for r in sets.values()
                     if "halves" in r) or "none"  # fmt: skip


def halves_benchmark() -> tuple[pd.DataFrame, str, str] | tuple[Skipped, str, str]:
    """The paper-size benchmark of the two layouts (``benchmarks/results``): its table, its
    caption and its command line; skipped when the benchmark has not been run."""
    from xr2ct_lib.config import REPO_ROOT

    bench = REPO_ROOT / "benchmarks" / "results" / "diffusion_bench_paper_cpu.csv"
    if not bench.is_file():
        where = bench.relative_to(REPO_ROOT)
        return Skipped(f"{where} is missing: run the benchmark (see its docstring)"), "", ""
    b = pd.read_csv(bench).set_index("halves")
    shown = ["sample_shape", "samples_per_volume", "denoiser_params_M", "batch",
             "train_s_per_step", "peak_memory_GiB", "ddim_1_s_per_volume",
             "ddpm_1000_s_per_volume"]  # fmt: skip
    machine, threads = b["machine"].iloc[0], b["torch_threads"].iloc[0]
    caption = (f"Paper size, one step per layout ({machine}, "
               f"{threads} thread; DDPM-1000 extrapolated from one step)")  # fmt: skip
    return b[shown], caption, f"Command: `{b['command'].iloc[0]}`; {b['note'].iloc[0]}."
