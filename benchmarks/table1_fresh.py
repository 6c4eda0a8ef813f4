"""Table 1 on fresh simulated patients: the X-ray reader, real CTPA and generated CTPA read on
the same patients, with DeLong CIs and tests (:mod:`xr2ct_lib.eval.fresh`).

Not a test::

    python benchmarks/table1_fresh.py --profile workshop --patients 300 --k 2 [--record]

``--record`` writes ``fresh_benchmark.json`` beside the bundle (tied to its fingerprint),
which chapter 8 shows under Table 1.
"""

from __future__ import annotations

import argparse
import os

from xr2ct_lib.config import PROFILES, WEIGHTS_DIR
from xr2ct_lib.eval.fresh import fresh_benchmark, record_table, save_record


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="workshop", choices=["smoke", "workshop"])
    ap.add_argument("--bundle", default=None, help="default: weights/<profile>")
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--k", type=int, default=2, help="generated samples per X-ray")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("XR2CT_NO_PROGRESS", "1")
    profile = PROFILES[args.profile]
    bundle = args.bundle or WEIGHTS_DIR / profile.name
    rec = fresh_benchmark(profile, bundle, args.patients, args.k, workers=args.workers)
    print(
        f"{profile.name}, {rec['bundle']}: {rec['patients']} fresh patients "
        f"({rec['pe_patients']} PE), {rec['seconds']}"
    )
    print(record_table(rec).to_string())
    if args.record:
        print(f"recorded in {save_record(bundle, rec)}")


if __name__ == "__main__":
    main()
