"""What the CXR encoders' embeddings carry, on fresh simulated patients: linear probes.

Not a test. Simulates ``--patients`` patients (X-ray and DRR) from phantom seeds that neither
the cohort nor any pretraining set uses (``fresh_benchmark`` block, seed 1), embeds their
X-rays and DRRs with each encoder, and prints the cross-validated AUC of a logistic probe for
each finding (:mod:`xr2ct_lib.eval.probe`)::

    python benchmarks/encoder_probe.py --profile workshop --patients 400 [--record]

Encoders: the shipped bundle's (``weights/<profile>/encoder``) and the X-ray reader's trunk
(``weights/<profile>-cxr-reader``). ``--record`` writes
``benchmarks/results/encoder_probe_<profile>.json``, which chapter 3 shows.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from xr2ct_lib.checkpoint import state_sha256
from xr2ct_lib.config import PROFILES, REPO_ROOT
from xr2ct_lib.eval.fresh import simulate_fresh
from xr2ct_lib.eval.probe import probe_table
from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.models.bundle import show
from xr2ct_lib.models.classifiers import load_classifier
from xr2ct_lib.models.cxr_encoder import ReaderCXREncoder, load_encoder

SEED = 1  # the fresh_benchmark block's seed 1 (seed 0: Table 1's fresh-patient benchmark)


@torch.no_grad()
def _embed(encoder, x: np.ndarray) -> np.ndarray:
    return np.concatenate([encoder.embed(torch.from_numpy(x[i : i + 64]).float()).numpy()
                           for i in range(0, len(x), 64)])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="workshop", choices=["smoke", "workshop"])
    ap.add_argument("--patients", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("XR2CT_NO_PROGRESS", "1")
    profile = PROFILES[args.profile]
    t = time.time()
    fresh = simulate_fresh(profile, args.patients, SEED, args.workers, with_drr=True)
    cxr, drr, records = fresh["cxr"], fresh["drr"], fresh["records"]
    seeds, y = records["phantom_seed"].to_numpy(), records["pe_label"].to_numpy()
    t_sim = time.time() - t
    bundle = REPO_ROOT / "weights" / profile.name
    reader_dir = REPO_ROOT / "weights" / f"{profile.name}-cxr-reader"
    encoders = {
        "bundle encoder": load_encoder(bundle / "encoder"),
        "X-ray reader trunk": ReaderCXREncoder(load_classifier(reader_dir), 512, show(reader_dir)),
    }
    embs = {}
    for name, enc in encoders.items():
        embs[f"{name}: X-ray"] = _embed(enc, cxr)
        embs[f"{name}: DRR"] = _embed(enc, drr)
    table = probe_table(embs, records)
    print(
        f"{profile.name}: linear probes (5-fold logistic AUC) on {args.patients} fresh "
        f"simulated patients ({int(y.sum())} PE; simulated in {t_sim:.0f} s)"
    )
    print(table.to_string())
    if args.record:
        rec = {
            "profile": profile.name, "patients": int(args.patients),
            "seeds": [int(seeds[0]), int(seeds[-1])],
            "encoders": {k: state_sha256(e.state_dict()) for k, e in encoders.items()},
            "table": json.loads(table.reset_index().to_json(orient="records")),
            "command": f"python benchmarks/encoder_probe.py --profile {profile.name} "
                       f"--patients {args.patients} --record",
        }  # fmt: skip
        path = Path(__file__).parent / "results" / f"encoder_probe_{profile.name}.json"
        atomic_write_text(path, json.dumps(rec, indent=1) + "\n")
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()
