"""The shipped clot reader on fresh simulated patients: its AUC where the cohort's 120 are few.

Not a test. Simulates ``--patients`` CT-only patients (half with PE) from phantom seeds that
neither the cohort (below 2³¹) nor the reader's pretraining used, and prints the reader's
AUC (score: the sum of clot probabilities, as in chapter 8) overall and by clot-burden
class, with the voxel recall of each class::

    python benchmarks/clot_reader_heldout.py --profile workshop --patients 540 [--record]

``--record`` writes the result beside the reader's weights (``heldout.json``, tied to their
sha256), where chapter 8 reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from xr2ct_lib.config import PROFILES
from xr2ct_lib.data.phantom import simulate_ct_batch
from xr2ct_lib.train.clot import clot_probability
from xr2ct_lib.train.pretrained import FIRST_SEED, save_heldout
from xr2ct_lib.train.readers.clot import READER

SEED_SLOT = 999  # pretraining seed s uses FIRST_SEED + s·10⁶ + i; this slot is kept for tests


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="workshop", choices=["smoke", "workshop"])
    ap.add_argument("--patients", type=int, default=540)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="write heldout.json beside the weights")
    args = ap.parse_args(argv)
    os.environ.setdefault("XR2CT_NO_PROGRESS", "1")
    torch.set_num_threads(args.threads)
    profile = PROFILES[args.profile]
    seeds = FIRST_SEED + SEED_SLOT * 10**6 + np.arange(args.patients)
    pre = json.loads((READER.directory(profile.name) / "config.json").read_text())["pretraining"]
    lo, hi = pre["seeds"]
    assert not ((seeds >= lo) & (seeds <= hi)).any(), "held-out seeds overlap the pretraining"
    reader = READER.load(READER.directory(profile.name), profile)
    y = (np.random.default_rng(SEED_SLOT).random(args.patients) < 0.5).astype(int)
    t = time.time()
    b = simulate_ct_batch(seeds.tolist(), y.tolist(), profile, size=profile.reader_size)
    t_sim = time.time() - t
    p = clot_probability(reader, b.ct)
    score = p.reshape(len(p), -1).sum(1)
    burden = b.records["burden"].to_numpy()
    print(f"{profile.name} reader ({pre['patients']} pretraining patients, {pre['epochs']} "
          f"epochs) on {args.patients} fresh patients ({y.sum()} PE; simulated in "
          f"{t_sim:.0f} s)")  # fmt: skip
    auc = float(roc_auc_score(y, score))
    print(f"  AUC {auc:.3f}")
    by_burden = {}
    for c in ("central", "lobar", "segmental"):
        m = burden == c
        if not m.any():
            continue
        recall = np.mean([(p[i][b.clot[i] > 0] > 0.5).mean() for i in np.flatnonzero(m)])
        c_auc = roc_auc_score(y[m | (y == 0)], score[m | (y == 0)])
        by_burden[c] = {"patients": int(m.sum()), "auc": round(float(c_auc), 4),
                        "voxel_recall": round(float(recall), 4)}  # fmt: skip
        print(f"  {c:9s} {m.sum():3d} patients: AUC vs no PE {c_auc:.3f}, clot voxels marked "
              f"(p > 0.5) {recall:.2f}")  # fmt: skip
    if args.record:
        out = save_heldout(READER.directory(profile.name), {
            "patients": int(args.patients), "pe_patients": int(y.sum()),
            "seeds": [int(seeds[0]), int(seeds[-1])], "auc": round(auc, 4),
            "by_burden": by_burden,
            "command": f"python benchmarks/clot_reader_heldout.py --profile {profile.name} "
                       f"--patients {args.patients} --record",
        })  # fmt: skip
        print(f"recorded in {out}")


if __name__ == "__main__":
    main()
