"""The shipped X-ray reader on fresh simulated patients: what it reads where the cohort's 120
are few.

Not a test. Simulates ``--patients`` patients (half with PE) from phantom seeds that neither
the cohort (below 2³¹) nor the reader's pretraining used, and prints the AUC of each of the
reader's outputs against the simulation's ground truth (PE, then each finding), and of its
PE output by clot-burden class::

    python benchmarks/cxr_reader_heldout.py --profile workshop --patients 540 [--record]

``--record`` writes the result beside the reader's weights (``heldout.json``, tied to their
sha256), where chapter 8 reads it.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from sklearn.metrics import roc_auc_score

from xr2ct_lib.config import PROFILES
from xr2ct_lib.train.pretrained import pretraining_labels, pretraining_seeds, save_heldout
from xr2ct_lib.train.readers import cxr as xr

SEED_SLOT = 998  # pretraining seeds use other slots (pretrained.pretraining_seeds)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="workshop", choices=["smoke", "workshop"])
    ap.add_argument("--patients", type=int, default=540)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="write heldout.json beside the weights")
    args = ap.parse_args(argv)
    os.environ.setdefault("XR2CT_NO_PROGRESS", "1")
    profile = PROFILES[args.profile]
    seeds = pretraining_seeds(0, args.patients, SEED_SLOT)
    y = pretraining_labels(SEED_SLOT, args.patients)
    d = xr.READER.directory(profile.name)
    reader = xr.READER.load(d, profile, cohort_seeds=seeds)  # refuses overlapping seeds
    pre = reader.pretraining
    t = time.time()
    x, records = xr.simulate_xrays(profile, seeds, y, args.workers)
    t_sim = time.time() - t
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    probs = xr.output_probabilities(reader, x)
    aucs = xr.output_aucs(probs, records)
    print(f"{profile.name} X-ray reader ({pre['patients']} pretraining patients, "
          f"{pre['epochs']} epochs) on {args.patients} fresh patients ({y.sum()} PE; simulated "
          f"in {t_sim:.0f} s)")  # fmt: skip
    print(aucs.round(3).to_string())
    score = probs["pe"].to_numpy()
    burden = records["burden"].to_numpy()
    by_burden = {}
    for c in ("central", "lobar", "segmental"):
        m = burden == c
        if m.any():
            c_auc = roc_auc_score(y[m | (y == 0)], score[m | (y == 0)])
            by_burden[c] = {"patients": int(m.sum()), "auc": round(float(c_auc), 4)}
            print(f"  PE output, {c:9s} {m.sum():3d} patients: AUC vs no PE {c_auc:.3f}")
    if args.record:
        out = save_heldout(d, {
            "patients": int(args.patients), "pe_patients": int(y.sum()),
            "seeds": [int(seeds[0]), int(seeds[-1])],
            "auc": round(float(aucs.loc["pe", "AUC"]), 4),
            "outputs": {k: {"patients": int(r["patients with it"]),
                            "auc": round(float(r["AUC"]), 4)} for k, r in aucs.iterrows()},
            "by_burden": by_burden,
            "command": f"python benchmarks/cxr_reader_heldout.py --profile {profile.name} "
                       f"--patients {args.patients} --record",
        })  # fmt: skip
        print(f"recorded in {out}")


if __name__ == "__main__":
    main()
