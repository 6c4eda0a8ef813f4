"""The pretrained X-ray reader: the book's analogue of the paper's pretrained X-ray network.

The paper's X-ray baseline fine-tunes RadImageNet, "a ResNet-50-based model pretrained on
millions of radiologic images" (the paper's methods). A CNN that meets its first radiographs
in a cohort's 80 training patients cannot learn what an enlarged pulmonary artery or a
cardiac silhouette looks like: trained from scratch per fold it stays at chance. As for the
clot reader (:mod:`.clot`), the simulator can make more patients. :meth:`CXRReader.pretrain`
(:data:`READER`) simulates X-ray patients in memory from seeds the cohort never uses, and
trains a :class:`~xr2ct_lib.models.classifiers.CXRClassifier` with one output for PE and one
for each finding a radiograph can show (:data:`FINDINGS`), supervised by the simulation's
records, as a radiologist learns the findings before weighing them. Chapter 8 reads every
fold with its PE output as it is (it saw no cohort patient). The pretraining patients come
from the same simulator as the cohort: an in-domain pretraining that real data rarely gets,
which the book says where it is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xr2ct_lib.config import Profile
from xr2ct_lib.models.classifiers import CXRClassifier
from xr2ct_lib.train import pretrained as pt
from xr2ct_lib.train.classifier import cxr_augment
from xr2ct_lib.train.readers.base import PretrainedReader
from xr2ct_lib.utils import parallel_map, progress

SLOT = 500  # pretraining seeds FIRST_SEED + (SLOT + seed)·10⁶ + i, apart from the clot reader's
WIDTH = 32  # twice the per-fold CNN's width: more patients
CHUNK = 200  # patients simulated at a time by one worker

# The reader's finding outputs: what a radiograph can show, from the simulation's records.
FINDINGS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "rv_strain": lambda r: r["rv_strain"],
    "pa_enlargement": lambda r: r["pa_enlargement"],
    "infarct": lambda r: r["infarct"],
    "pneumonia": lambda r: r["pneumonia"],
    "effusion_left": lambda r: r["effusion_left_ml"] > 0,
    "effusion_right": lambda r: r["effusion_right_ml"] > 0,
    "oligaemia": lambda r: r["oligaemia"],
    "lv_cardiomegaly": lambda r: r["lv_cardiomegaly"],
}


def output_label(key: str) -> str:
    """``"rv_strain"`` → ``"RV strain"``: an output's name for prose and figures."""
    abbrev = {"pe": "PE", "pa": "PA", "rv": "RV", "lv": "LV"}
    return " ".join(abbrev.get(w, w) for w in str(key).split("_"))


def targets(records: pd.DataFrame, findings=tuple(FINDINGS)) -> np.ndarray:
    """(N, 1 + len(findings)) float32: the PE label, then each finding's indicator."""
    cols = [records["pe_label"]] + [FINDINGS[f](records) for f in findings]
    return np.stack([np.asarray(c, dtype=np.float32) for c in cols], axis=1)


def _simulate_chunk(args) -> tuple[np.ndarray, pd.DataFrame]:
    from xr2ct_lib.data.phantom import simulate_ct_batch

    seeds, labels, profile = args
    b = simulate_ct_batch(seeds, labels, profile, with_cxr=True)
    return b.cxr.astype(np.float16), b.records


def simulate_xrays(
    profile: Profile, seeds, labels, workers: int = 1
) -> tuple[np.ndarray, pd.DataFrame]:
    """(X-rays (N, 3, S, S) float16 as the cohort's are prepared, records): patients simulated
    in chunks, ``workers`` processes at a time; the same seeds give the same arrays."""
    from xr2ct_lib.data.phantom import load_base
    from xr2ct_lib.data.phantom.build import simulation_spacing_mm

    seeds, labels = [int(s) for s in seeds], [int(y) for y in labels]
    args = [(seeds[i : i + CHUNK], labels[i : i + CHUNK], profile)
            for i in range(0, len(seeds), CHUNK)]  # fmt: skip
    load_base(simulation_spacing_mm(profile))  # once, before forking workers
    out = parallel_map(_simulate_chunk, args, workers, desc="simulating X-ray patients",
                       unit="chunk")  # fmt: skip
    return np.concatenate([x for x, _ in out]), pd.concat([r for _, r in out], ignore_index=True)


def fit_cxr_reader(
    x: torch.Tensor,
    y: np.ndarray,
    findings: tuple[str, ...],
    epochs: int,
    seed: int = 0,
    width: int = WIDTH,
    lr: float = 1e-3,
    batch: int = 32,
) -> CXRClassifier:
    """Fit a :class:`CXRClassifier` with outputs PE + ``findings`` on X-rays ``x`` (N, 3, S, S)
    and targets ``y`` (N, 1 + len(findings)) (:func:`targets`): AdamW, one-cycle learning
    rate, the per-fold CNN's augmentation, every patient of every epoch (no early stop:
    there is no validation split; the benchmark reads fresh patients)."""
    if y.shape != (len(x), 1 + len(findings)):
        raise ValueError(f"targets of shape {y.shape} for {len(x)} X-rays and {findings}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CXRClassifier(width, findings)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = max(1, len(x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * per_epoch)
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    model.train()
    for _ in progress(range(epochs), desc="pretraining the X-ray reader", unit="epoch"):
        order = torch.randperm(len(x), generator=gen)
        for i in range(per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            out = model.all_logits(cxr_augment(x[idx].float(), gen))
            loss = F.binary_cross_entropy_with_logits(out, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def output_probabilities(model: CXRClassifier, x, batch: int = 64) -> pd.DataFrame:
    """The reader's probabilities on X-rays ``x`` (N, 3, S, S): one column per output."""
    model.eval()
    x = torch.as_tensor(np.asarray(x))
    out = [model.all_logits(x[i : i + batch].float()) for i in range(0, len(x), batch)]
    out = torch.sigmoid(torch.cat(out)).numpy()
    return pd.DataFrame(out, columns=["pe", *model.findings])


def output_aucs(p: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Each output's AUC against the simulation's ground truth on these patients, from the
    reader's probabilities ``p`` (:func:`output_probabilities`), with the number of patients
    who have the finding (NaN where one class is missing)."""
    from sklearn.metrics import roc_auc_score

    y = targets(records, tuple(p.columns[1:]))
    rows = []
    for j, name in enumerate(p.columns):
        yj = y[:, j]
        auc = roc_auc_score(yj, p[name]) if 0 < yj.sum() < len(yj) else float("nan")
        rows.append({"output": name, "patients with it": int(yj.sum()), "AUC": float(auc)})
    return pd.DataFrame(rows).set_index("output")


def outputs_table(
    model: CXRClassifier, x, records: pd.DataFrame, fresh: dict | None = None
) -> pd.DataFrame:
    """What the reader reads: each output's AUC on these X-rays against the simulation's
    ground truth (:func:`output_aucs`), beside its recorded AUC on fresh simulated patients
    (``fresh``: :func:`~xr2ct_lib.train.pretrained.load_heldout`) when there is one. Columns:
    ``"<patients>: patients with it"`` and ``"<patients>: AUC"`` for each group."""
    here = f"cohort ({len(records)} patients)"
    t = output_aucs(output_probabilities(model, x), records)
    t.columns = [f"{here}: patients with it", f"{here}: AUC"]
    if fresh is not None:
        out, there = fresh["outputs"], f"fresh ({fresh['patients']} patients)"
        t[f"{there}: patients with it"] = [out[k]["patients"] for k in t.index]
        t[f"{there}: AUC"] = [out[k]["auc"] for k in t.index]
    return t


def outputs_reading(table: pd.DataFrame, seen: float = 0.8, missed: float = 0.65) -> str:
    """One Markdown sentence from :func:`outputs_table`: the findings the reader reads on the
    cohort's X-rays (AUC ≥ ``seen``) and those it barely reads (AUC < ``missed``)."""
    auc_col, n_col = table.columns[1], table.columns[0]  # the cohort's
    auc = table[auc_col].drop("pe").dropna()

    def names(s):
        return ", ".join(f"{output_label(k)} ({v:.2f})" for k, v in s.items()) or "none"

    pe_auc, pe_n = table.loc["pe", auc_col], int(table.loc["pe", n_col])
    return (f"On the cohort's X-rays the reader reads {names(auc[auc >= seen])} "
            f"(AUC ≥ {seen}), and barely reads {names(auc[auc < missed])} (AUC < {missed}). "
            f"Its PE output reaches AUC {pe_auc:.2f} (all {pe_n} PE patients of the cohort "
            f"against the rest).")  # fmt: skip


class CXRReader(PretrainedReader):
    """The X-ray reader: a :class:`~xr2ct_lib.models.classifiers.CXRClassifier` with a PE
    output and one output per finding (:data:`FINDINGS`)."""

    name, folder, inputs = "cxr", "cxr-reader", "X-rays"
    command = "xr2ct pretrain-cxr-reader --profile {}"
    benchmark = "benchmarks/cxr_reader_heldout.py"
    score = "PE AUC"
    shipped_sizes = {"smoke": (1200, 15), "workshop": (4800, 20)}  # `make cxr-reader`
    from_scratch = "X-ray CNN trained here per fold from scratch"

    def input_size(self, profile: Profile) -> tuple:
        return (3, profile.cxr_size, profile.cxr_size)

    def describe_pretrained(self, pre: dict) -> str:
        return (f"X-ray reader pretrained on {pre['patients']} extra simulated X-ray patients "
                f"({pre['source']})")  # fmt: skip

    def pretrain(
        self, profile: Profile, patients: int, epochs: int, seed: int = 0, workers: int = 1
    ) -> tuple[CXRClassifier, dict]:
        """Simulate ``patients`` X-ray patients (half with PE) and fit the reader on their X-rays,
        PE labels and findings; returns the model and its provenance."""
        pt.check_sizes(patients, epochs)
        t0 = time.time()
        seeds = pt.pretraining_seeds(seed, patients, SLOT)
        labels = pt.pretraining_labels(seed, patients)
        x, records = simulate_xrays(profile, seeds, labels, workers)
        t_sim = time.time() - t0
        findings = tuple(FINDINGS)
        y = targets(records, findings)
        model = fit_cxr_reader(torch.from_numpy(x), y, findings, epochs, seed)
        provenance = pt.pretraining_record(
            profile, labels, seeds, epochs, seed, (t_sim, time.time() - t0 - t_sim),
            input_size=[3, profile.cxr_size, profile.cxr_size], lr_schedule="one-cycle",
            findings={f: int(y[:, i + 1].sum()) for i, f in enumerate(findings)},
        )  # fmt: skip
        return model, provenance


READER = CXRReader()
