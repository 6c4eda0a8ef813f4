"""Quality vs sampling steps on a few held-out patients: how a profile's fast sampler is chosen.

Not a test. Needs the prepared cohort (``xr2ct prepare``) and the bundle of ``--weights``::

    python benchmarks/sampler_sweep.py --profile workshop --patients 4 \
        --settings ddim:1 ddim:2 ddim:3 ddim:5 ddim:10 dpm++:3 dpm++:5

Prints, per (sampler, steps): mean PSNR and SSIM against the ground truth, the neighbour
gap of the generated volumes and its ratio to the ground truth's, and seconds per volume
on this machine. Patients are the first of folds 0 and 1 (held out of every bundle).
"""

from __future__ import annotations

import argparse
import os

import pandas as pd
import torch

from xr2ct_lib.config import load_config
from xr2ct_lib.data.cohort import PreparedCohort
from xr2ct_lib.eval.fidelity import sampler_sweep
from xr2ct_lib.generation.load import load_generator


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="workshop")
    ap.add_argument("--weights", default="shipped", choices=["shipped", "trained"])
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--settings", nargs="+", default=["ddim:1", "ddim:2", "ddim:3", "ddim:5",
                                                      "ddim:10", "dpm++:3", "dpm++:5"])  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("XR2CT_NO_PROGRESS", "1")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile, weights=args.weights)
    cohort = PreparedCohort(cfg.run_dir)
    ids = [p for p, f in zip(cohort.ids, cohort.folds, strict=True) if f in (0, 1)]
    ids = ids[: args.patients]
    pipe = load_generator(cfg)
    settings = [(s.split(":")[0], int(s.split(":")[1])) for s in args.settings]
    table = sampler_sweep(cfg, pipe, ids, settings)
    with pd.option_context("display.width", 140, "display.precision", 4):
        print(f"profile={cfg.profile.name} weights={cfg.weights} patients={ids} "
              f"threads={args.threads}")  # fmt: skip
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
