"""Table 1 asked where the answer can be read: every reader on the same fresh patients.

The cohort's 40 held-out patients give AUC intervals of ±0.17: no comparison between the
X-ray and a generated CTPA can be read from them. :func:`fresh_benchmark` simulates patients
(X-ray and CTPA) from phantom seeds that neither the cohort nor any pretraining set uses
(the ``fresh_benchmark`` block), generates each one's CTPA from its X-ray with a bundle (``k``
samples), and reads every patient four ways: the X-ray reader on the X-ray; the clot reader
and the pretrained latent classifier on the real CTPA; the clot reader on the VAE's
reconstruction of the real CTPA (a measure of the clot evidence the latents keep, which
bounds the latent classifier); the same two on the generated CTPA (one sample, and the mean
over ``k``). Each row gets DeLong's 95 % CI, each generated row a DeLong test against the
X-ray reader, and the table the ceilings an ideal reader of the
records reaches on the same patients. The result is recorded beside the bundle
(``fresh_benchmark.json``, tied to its fingerprint) for chapter 8.

The information bound: a CTPA generated from an X-ray carries no evidence the X-ray lacks
(the ``shared`` ceiling), so a generated row above the X-ray reader means a better reader of
the same evidence, never new evidence.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.train import pretrained as pt
from xr2ct_lib.utils import parallel_map, progress

RECORD = "fresh_benchmark.json"
CONDITION_USE_PATIENTS = 64
NAME = "fresh_benchmark"
XRAY = "X-ray reader (X-ray)"
REAL_CLOT = "clot reader (real CTPA, generator's grid)"
RECON = "clot reader (the VAE's reconstruction of the real CTPA)"  # what the latents keep
REAL_LATENT = "latent classifier (real CTPA latents)"
COMMAND = "python benchmarks/table1_fresh.py --profile {} --patients {} --k {} --record"


def _simulate(args):
    from xr2ct_lib.data.phantom import simulate_ct_batch

    seeds, labels, profile, with_drr = args
    b = simulate_ct_batch(seeds, labels, profile, with_cxr=True, with_drr=with_drr)
    half = {
        k: getattr(b, k).astype(np.float16)
        for k in ("ct", "cxr", "drr")
        if getattr(b, k) is not None
    }
    return half, b.records


def simulate_fresh(profile, patients: int, seed: int = 0, workers: int = 1,
                   with_drr: bool = False) -> dict:  # fmt: skip
    """``{"ct": (N, D, H, W) at the generator's size, "cxr": (N, 3, S, S), ["drr": (N, 3, S,
    S),] "records": with phantom_seed and pe_label}`` (float16 arrays): half with PE, seeds of
    the ``fresh_benchmark`` block made with ``seed``."""
    from xr2ct_lib.data.phantom import load_base
    from xr2ct_lib.data.phantom.build import simulation_spacing_mm

    seeds = pt.seed_block(NAME, seed, patients)
    pt.check_disjoint(NAME, seeds)
    labels = pt.pretraining_labels(seed, patients)
    chunks = [(seeds[i : i + 50].tolist(), labels[i : i + 50].tolist(), profile, with_drr)
              for i in range(0, patients, 50)]  # fmt: skip
    load_base(simulation_spacing_mm(profile))
    out = parallel_map(_simulate, chunks, workers, desc="fresh patients", unit="chunk")
    arrays = {k: np.concatenate([a[k] for a, _ in out]) for k in out[0][0]}
    records = pd.concat([r for _, r in out], ignore_index=True)
    return {**arrays, "records": records.assign(phantom_seed=seeds, pe_label=labels)}


@torch.no_grad()
def generate(pipe, cxr: np.ndarray, k: int, seed: int = 0, batch: int = 8):
    """``k`` generated CTPA per X-ray: (volumes (k, N, D, H, W) in [−1, 1], raw latents
    (k, N, 2, C, d, h, w)), sample j of batch b seeded with (seed, j, b)."""
    vols, lats = [], []
    for j in range(k):
        v_j, z_j = [], []
        starts = range(0, len(cxr), batch)
        for b in progress(starts, desc=f"generating (sample {j + 1} of {k})", unit="batch"):
            g = torch.Generator().manual_seed(
                int(np.random.SeedSequence([seed, j, b]).generate_state(1)[0])
            )
            out = pipe(torch.from_numpy(cxr[b : b + batch].astype(np.float32)), generator=g)
            v_j.append(np.asarray(out.volumes, dtype=np.float32))
            z_j.append(torch.as_tensor(out.latents).float().numpy())
        vols.append(np.concatenate(v_j))
        lats.append(np.concatenate(z_j))
    return np.stack(vols), np.stack(lats)


def cross_fitted(profile, init, z: np.ndarray, y: np.ndarray, seed: int = 0,
                 epochs: int | None = None) -> np.ndarray:  # fmt: skip
    """The paper's generated-CTPA latent classifier on fresh patients: a copy of ``init``
    fine-tuned on the generated latents ``z`` (N, 2, C, d, h, w), normalised, of one half of
    the patients (a fifth of them for stopping) scores the other half, and the reverse
    (2-fold cross-fitting: every patient is scored by a model that never saw it)."""
    from xr2ct_lib.train.classifier import fit_latent_classifier, score_latents

    epochs = profile.classifier_epochs if epochs is None else epochs
    order = np.random.default_rng(seed).permutation(len(y))
    halves = (np.sort(order[: len(y) // 2]), np.sort(order[len(y) // 2 :]))
    out = np.full(len(y), np.nan)
    z = np.asarray(z, dtype=np.float32)
    for fit_on, score_on in (halves, halves[::-1]):
        n_val = max(2, len(fit_on) // 5)
        split = {"train": fit_on[n_val:], "val": fit_on[:n_val]}
        model = fit_latent_classifier(profile, z, y, split, epochs, seed,
                                      "fine-tuning on generated latents", init=init)  # fmt: skip
        out[score_on] = score_latents(model, z[score_on])
    return out


def fresh_benchmark(profile, bundle: str | Path, patients: int, k: int = 1, seed: int = 0,
                    workers: int = 1) -> dict:  # fmt: skip
    """Simulate, generate and read ``patients`` fresh patients (see the module); the record."""
    from xr2ct_lib.checkpoint import state_sha256
    from xr2ct_lib.eval.ceilings import ceilings_table
    from xr2ct_lib.eval.condition_use import condition_use
    from xr2ct_lib.eval.sign_measures import sign_transfer
    from xr2ct_lib.eval.stats import delong_ci, delong_test
    from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline
    from xr2ct_lib.models import bundle as B
    from xr2ct_lib.models import halves as H
    from xr2ct_lib.train.classifier import score_latents
    from xr2ct_lib.train.clot import score_volumes
    from xr2ct_lib.train.readers import READERS
    from xr2ct_lib.train.readers.cxr import output_probabilities

    t0 = time.time()
    fresh = simulate_fresh(profile, patients, seed, workers)
    ct, cxr, records = fresh["ct"], fresh["cxr"], fresh["records"]
    y = records["pe_label"].to_numpy(int)
    seeds = records["phantom_seed"].to_numpy()
    t_sim = time.time() - t0
    pipe = XRay2CTPAPipeline.from_pretrained(bundle, profile)
    clot = READERS["clot"].shipped(profile, seeds)
    xray = READERS["cxr"].shipped(profile, seeds)
    vae_sha = state_sha256(pipe.vae.state_dict())
    lc = READERS["latent"]
    latent = lc.load(lc.directory(profile.name), profile, seeds, vae_sha, pipe.normalizer)
    t1 = time.time()
    gen_ct, gen_z = generate(pipe, cxr, k, seed)
    t_gen = time.time() - t1
    real_z = np.stack([pipe.vae.encode_halves(v).float().numpy() for v in ct.astype(np.float32)])

    def latent_score(z):
        return score_latents(latent, pipe.normalizer.normalize(z).astype(np.float32))

    scores = {
        XRAY: output_probabilities(xray, cxr)["pe"].to_numpy(),
        REAL_CLOT: score_volumes(clot, ct.astype(np.float32)),
        RECON: score_volumes(clot, pipe.decode(torch.from_numpy(real_z))),
        REAL_LATENT: latent_score(real_z),
        "clot reader (generated CTPA, 1 sample)": score_volumes(clot, gen_ct[0]),
        "latent classifier (generated CTPA, 1 sample)": latent_score(gen_z[0]),
    }
    tuned = "latent classifier fine-tuned on generated latents (generated CTPA, 1 sample)"
    scores[tuned] = cross_fitted(profile, latent, pipe.normalizer.normalize(gen_z[0]), y, seed)
    if k > 1:
        scores[f"clot reader (generated CTPA, mean of {k})"] = np.mean(
            [score_volumes(clot, v) for v in gen_ct], axis=0)  # fmt: skip
        scores[f"latent classifier (generated CTPA, mean of {k})"] = np.mean(
            [latent_score(z) for z in gen_z], axis=0)  # fmt: skip
    rows = {}
    for name, s in scores.items():
        r = delong_ci(y, s)
        row = {"auc": round(r.auc, 4), "lo": round(r.lo, 4), "hi": round(r.hi, 4)}
        if name != XRAY:
            d = delong_test(y, s, scores[XRAY])
            row.update({"minus_xray": round(float(d["diff"]), 4), "p_vs_xray": float(d["p"])})
        rows[name] = row
    ceil = ceilings_table(records)
    ids = [str(v) for v in seeds]
    signs = sign_transfer(
        real_z, records.set_index(pd.Index(ids)), y, np.arange(len(y)) % 5,
        dict(zip(ids, gen_z[0], strict=True)), ids,
    )  # fmt: skip
    n_use = min(len(y), CONDITION_USE_PATIENTS)
    halves = pipe.profile.halves
    z_use = torch.from_numpy(pipe.normalizer.normalize(real_z[:n_use]).astype(np.float32))
    emb = pipe.encode_cxr(torch.from_numpy(cxr[:n_use].astype(np.float32)))
    cond = condition_use(pipe.denoiser, pipe.scheduler, H.to_diffusion(z_use, halves),
                         H.repeat_per_sample(emb, halves), seed=seed)  # fmt: skip
    return {
        "profile": profile.name, "patients": int(patients), "pe_patients": int(y.sum()),
        "seeds": [int(seeds[0]), int(seeds[-1])], "k": int(k), "bundle": B.show(Path(bundle)),
        "bundle_key": B.fingerprint(bundle), "rows": rows,
        "ceilings": {i: {"auc": float(r["AUC"]), "ci": r["95% CI"]} for i, r in ceil.iterrows()},
        "signs": signs.set_index("sign").to_dict(orient="index"), "sign_probe": "latent",
        "condition_use": {"patients": n_use, "rows": cond.round(6).to_dict(orient="records")},
        "networks": {"clot_reader": clot.pretraining["source"], "xray_reader":
                     xray.pretraining["source"], "latent_classifier": latent.pretraining["source"]},
        "seconds": {"simulate": round(t_sim, 1), "generate": round(t_gen, 1),
                    "total": round(time.time() - t0, 1)},
        "command": COMMAND.format(profile.name, patients, k),
    }  # fmt: skip


def save_record(bundle: str | Path, rec: dict) -> Path:
    return atomic_write_text(Path(bundle) / RECORD, json.dumps(rec, indent=1) + "\n")


def load_record(bundle: str | Path) -> dict | None:
    """The benchmark recorded beside ``bundle``, None when there is none; raises when it was
    recorded for other weights (rerun its command)."""
    from xr2ct_lib.models import bundle as B

    path = Path(bundle) / RECORD
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec.get("bundle_key") != B.fingerprint(bundle):
        raise ValueError(f"{path} was recorded for other weights than {bundle}'s: rerun "
                         f"`{rec.get('command')}`")  # fmt: skip
    return rec


def record_table(rec: dict) -> pd.DataFrame:
    """The recorded rows as a table: AUC (95 % CI), difference from the X-ray reader and its
    DeLong p, then the ceilings on the same patients."""
    rows = []
    for name, r in rec["rows"].items():
        diff = f"{r['minus_xray']:+.2f}" if "minus_xray" in r else ""
        p = f"{r['p_vs_xray']:.2g}" if "p_vs_xray" in r else ""
        ci = f"{r['auc']:.2f} ({r['lo']:.2f}–{r['hi']:.2f})"
        rows.append({"reader": name, "AUC (95% CI)": ci, "minus X-ray reader": diff,
                     "p (DeLong)": p})  # fmt: skip
    for name, c in rec["ceilings"].items():
        rows.append({"reader": f"ceiling: {name}", "AUC (95% CI)": f"{c['auc']:.2f} ({c['ci']})",
                     "minus X-ray reader": "", "p (DeLong)": ""})  # fmt: skip
    return pd.DataFrame(rows).set_index("reader")


def reading(rec: dict) -> str:
    """One Markdown paragraph from the record: the best generated row against the X-ray
    reader (difference, DeLong p) and where both lie against the ceilings."""
    rows = rec["rows"]
    xray = rows[XRAY]
    gen = {k: v for k, v in rows.items() if "generated" in k}
    best = max(gen, key=lambda k: gen[k]["auc"])
    b = gen[best]
    ceil = rec["ceilings"]
    shared = next((v for k, v in ceil.items() if k.startswith("shared")), None)
    xc = next((v for k, v in ceil.items() if k.startswith("X-ray")), None)
    side = "above" if b["minus_xray"] > 0 else "below"
    sig = "" if b["p_vs_xray"] < 0.05 else ", a difference these patients cannot tell from none"
    text = (
        f"On {rec['patients']} fresh patients the best generated-CTPA row, the {best}, "
        f"reaches AUC {b['auc']:.2f} ({b['lo']:.2f}–{b['hi']:.2f}), {side} the X-ray "
        f"reader's {xray['auc']:.2f} ({xray['lo']:.2f}–{xray['hi']:.2f}) by "
        f"{abs(b['minus_xray']):.2f} (DeLong p = {b['p_vs_xray']:.2g}{sig})."
    )
    if shared is not None and xc is not None:
        text += (
            f" An ideal reader of the X-ray's findings reaches {xc['auc']:.2f} on these "
            f"patients, and of those findings a CT can show (the most a generated CTPA "
            f"can carry) {shared['auc']:.2f}."
        )
    return text + latent_ceiling_reading(rec) + signs_reading(rec) + condition_reading(rec)


def latent_ceiling_reading(rec: dict) -> str:
    """What the VAE keeps of the clot evidence: the clot reader on the real CTPA and on its
    reconstruction from the latents, beside the latent classifier; "" for a record without
    the reconstruction row."""
    rows = rec["rows"]
    if RECON not in rows:
        return ""
    real, recon, lat = (rows[k]["auc"] for k in (REAL_CLOT, RECON, REAL_LATENT))
    return (
        f" The clot reader reads the real CTPA at {real:.2f} and the VAE's reconstruction of "
        f"it, decoded from the latents, at {recon:.2f}: a measure of the clot evidence the "
        f"latents keep; the latent classifier reaches {lat:.2f}."
    )


def signs_reading(rec: dict) -> str:
    """The sign transfer on the same fresh patients (a probe fitted on their real CTPA,
    cross-fitted over 5 folds), as Markdown bullets; "" for a record without it."""
    signs = rec.get("signs")
    if not signs:
        return ""
    lines = [f"\n\nWhat the generated CTPA carries over from the X-ray, on the same "
             f"{rec['patients']} patients (Spearman ρ of each sign measured on the CTPA's "
             f"{rec.get('sign_probe', 'volume')} with the record's value):"]  # fmt: skip
    for name, r in signs.items():
        lines.append(f"- {name}: real CTPA ρ = {r['real: ρ with truth']:.2f}, generated CTPA "
                     f"ρ = {r['generated: ρ with truth']:.2f}")  # fmt: skip
    return "\n".join(lines)


def condition_reading(rec: dict) -> str:
    """How much the denoiser reads its condition (:mod:`xr2ct_lib.eval.condition_use`) at
    the noisiest timestep recorded; "" for a record without it."""
    cu = rec.get("condition_use")
    if not cu:
        return ""
    r = max(cu["rows"], key=lambda row: row["timestep"])
    vs_none = 1 - r["own"] / r["none"]

    def lower(x: float) -> str:
        return f"{abs(x):.0%} {'lower' if x >= 0 else 'higher'}"

    return (
        f"\n\nDoes the denoiser read its condition? At timestep {r['timestep']} its error "
        f"on {cu['patients']} of these patients' latents is {lower(r['gain'])} with the "
        f"patient's own X-ray than with another patient's (95 % CI {r['gain_lo']:.0%} to "
        f"{r['gain_hi']:.0%}), and {lower(vs_none)} than with no X-ray at all"
        + (": the condition misleads more than it informs." if vs_none < 0 else ".")
    )
