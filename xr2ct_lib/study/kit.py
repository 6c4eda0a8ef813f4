"""Write the offline HTML reader-study kit and its answer key.

The kit is one folder: ``index.html`` (the HTML, CSS and JavaScript of ``template/`` and every
image inline, so it opens from disk with no server and makes no network request),
``kit.json`` (the public list of case codes) and ``README.txt``. Each volume is one PNG
sprite sheet of its axial slices (8-bit over the stored HU window) that the page decodes
into a volume and shows as axial, coronal or sagittal slices. The answer key
(``<KIT>-key.csv``) is written beside the folder, never inside it. Cases are blinded by
random codes and shuffled with the seed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from xr2ct_lib.data.hu_window import PAPER_WINDOW, HUWindow
from xr2ct_lib.files import atomic_write_text

TASKS = ("realism", "pe_cxr", "pe_ctpa")
CODE_ALPHABET = "ACDEFHJKMNPRTUVWXY3479"  # no 0/O, 1/I/L, 2/Z, 5/S, 6/G, 8/B
KEY_COLUMNS = ["kit_id", "task", "code", "patient_id", "truth"]


@dataclass(frozen=True)
class PECase:
    """A PE-task case: the X-ray (S, S) in [0, 1] and the generated CTPA (D, H, W) in [−1, 1]."""

    patient_id: str
    label: int
    cxr: np.ndarray
    generated_ct: np.ndarray


@dataclass(frozen=True)
class VolumeCase:
    """A real-or-generated case: a CTPA (D, H, W) in [−1, 1] and what it is."""

    patient_id: str
    kind: str  # "real" or "generated"
    ct: np.ndarray


@dataclass(frozen=True)
class KitInfo:
    path: Path
    key_path: Path
    kit_id: str
    counts: dict[str, int]
    html_bytes: int
    notes: list[str] = field(default_factory=list)


def key_path_for(kit_dir: str | Path) -> Path:
    """``KIT-key.csv`` beside the kit folder ``KIT``."""
    kit_dir = Path(kit_dir).resolve()
    return kit_dir.with_name(f"{kit_dir.name}-key.csv")


def _png_data_uri(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def volume_sprite(ct: np.ndarray) -> dict:
    """Axial slices of a (D, H, W) volume in [−1, 1] tiled row-major into one 8-bit PNG."""
    d, h, w = ct.shape
    cols = math.ceil(math.sqrt(d))
    rows = math.ceil(d / cols)
    v = np.clip(np.rint((np.asarray(ct, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    sheet = np.zeros((rows * h, cols * w), np.uint8)
    for z in range(d):
        r, c = divmod(z, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = v[z]
    return {"shape": [d, h, w], "cols": cols, "sprite": _png_data_uri(sheet)}


def _xray_uri(cxr: np.ndarray) -> str:
    x = np.clip(np.rint(np.asarray(cxr, np.float32) * 255), 0, 255)
    return _png_data_uri(x.astype(np.uint8))


def _check_inputs(pe_cases: list[PECase], volume_cases: list[VolumeCase]) -> None:
    if not pe_cases or not volume_cases:
        raise ValueError(f"the kit needs PE cases and volumes, got {len(pe_cases)} and "
                         f"{len(volume_cases)}")  # fmt: skip
    if {c.label for c in pe_cases} != {0, 1}:
        raise ValueError("the PE task needs both PE (1) and non-PE (0) patients")
    if {c.kind for c in volume_cases} != {"real", "generated"}:
        raise ValueError("the real-or-generated task needs real and generated volumes")
    pe_ids = [c.patient_id for c in pe_cases]
    vol_ids = [(c.patient_id, c.kind) for c in volume_cases]
    for task, ids in (("PE", pe_ids), ("real-or-generated", vol_ids)):
        if len(set(ids)) != len(ids):
            raise ValueError(f"the {task} task lists a patient twice")

    def check(arr, ndim, lo, hi, what):
        a = np.asarray(arr)
        if a.ndim != ndim or min(a.shape) < 2:
            raise ValueError(f"{what}: expected a {ndim}D image, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: contains NaN or inf")
        if a.min() < lo - 0.05 or a.max() > hi + 0.05:
            raise ValueError(f"{what}: values {a.min():.3g}…{a.max():.3g} outside {lo}…{hi}")

    for c in pe_cases:
        check(c.cxr, 2, 0, 1, f"patient {c.patient_id}: X-ray")
        check(c.generated_ct, 3, -1, 1, f"patient {c.patient_id}: generated CTPA")
    for c in volume_cases:
        check(c.ct, 3, -1, 1, f"patient {c.patient_id}: {c.kind} CTPA")


def _codes(rng: np.random.Generator, prefix: str, n: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        code = prefix + "".join(rng.choice(list(CODE_ALPHABET), 4))
        if code not in taken:
            taken.add(code)
            out.append(code)
    return out


def _render(data: dict, title: str) -> str:
    tpl = resources.files("xr2ct_lib.study") / "template"
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    html = (tpl / "index.html").read_text(encoding="utf-8")
    for name, text in (("{{KIT_CSS}}", (tpl / "kit.css").read_text(encoding="utf-8")),
                       ("{{VIEWER_JS}}", (tpl / "viewer.js").read_text(encoding="utf-8")),
                       ("{{KIT_JS}}", (tpl / "kit.js").read_text(encoding="utf-8")),
                       ("{{TITLE}}", title.replace("<", "&lt;")),
                       ("{{KIT_DATA}}", payload)):  # fmt: skip
        html = html.replace(name, text)
    return html


README = """{title}

How to take part
1. Open index.html in a web browser (double-click it; Chrome, Edge or Firefox).
   Nothing is sent anywhere: the kit works offline and keeps your answers in this browser.
2. Enter your name, then answer the three parts in order:
   A. {n_vol} CT volumes: real or generated? Rate anatomic correctness and slice consistency.
   B. Phase 1: {n_pe} chest X-rays: pulmonary embolism or not?
   C. Phase 2: the same {n_pe} cases with a CTPA generated from the X-ray.
   Finishing a part locks its answers.
3. Press "Download responses (CSV)" and send the file to the organiser.

Kit {kit_id}. The answer key is not in this folder.
"""


def build_kit(
    pe_cases: list[PECase],
    volume_cases: list[VolumeCase],
    out: str | Path,
    seed: int = 0,
    title: str = "X-ray2CTPA reader study",
    window: HUWindow = PAPER_WINDOW,
    about: str = "",
    notes: list[str] | None = None,
) -> KitInfo:
    """Write the kit folder ``out`` (atomically: temp dir + rename) and ``out``-key.csv.

    ``about`` is shown to the participants (where the images come from).
    """
    _check_inputs(pe_cases, volume_cases)
    out = Path(out).resolve()
    key_path = key_path_for(out)
    if out.exists() and not (out / "kit.json").is_file():
        raise FileExistsError(f"{out} exists and is not a reader kit; choose another --out")
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    pe_codes = _codes(rng, "P", len(pe_cases), taken)
    vol_codes = _codes(rng, "V", len(volume_cases), taken)
    kit_id = hashlib.sha256(json.dumps(
        [seed, [c.patient_id for c in pe_cases], [[c.patient_id, c.kind] for c in volume_cases],
         pe_codes, vol_codes]).encode()).hexdigest()[:10]  # fmt: skip

    # every image gets an opaque id, in an order that says nothing about the case
    images: list[tuple[str, object]] = [("xray", c) for c in pe_cases]
    images += [("gen", c) for c in pe_cases] + [("vol", c) for c in volume_cases]
    order = rng.permutation(len(images))
    ids = {}
    xrays, volumes = {}, {}
    for n, i in enumerate(order):
        kind, case = images[i]
        ids[(kind, id(case))] = img_id = f"i{n:03d}"
        if kind == "xray":
            xrays[img_id] = _xray_uri(case.cxr)
        else:
            volumes[img_id] = volume_sprite(case.generated_ct if kind == "gen" else case.ct)

    pe_items = [{"code": code, "xray": ids[("xray", id(c))], "volume": ids[("gen", id(c))]}
                for code, c in zip(pe_codes, pe_cases, strict=True)]  # fmt: skip
    vol_items = [{"code": code, "volume": ids[("vol", id(c))]}
                 for code, c in zip(vol_codes, volume_cases, strict=True)]  # fmt: skip
    tasks = {
        "realism": [vol_items[i]["code"] for i in rng.permutation(len(vol_items))],
        "pe_cxr": [pe_items[i]["code"] for i in rng.permutation(len(pe_items))],
        "pe_ctpa": [pe_items[i]["code"] for i in rng.permutation(len(pe_items))],
    }
    public = {"kit_id": kit_id, "title": title, "about": about, "tasks": tasks,
              "window_hu": [window.lo, window.hi]}  # fmt: skip
    data = {"kit": public, "pe_cases": pe_items, "volumes_task": vol_items,
            "xrays": xrays, "volumes": volumes}  # fmt: skip
    html = _render(data, title)

    key = [{"kit_id": kit_id, "task": t, "code": code, "patient_id": c.patient_id,
            "truth": "pe" if c.label else "no_pe"}
           for t in ("pe_cxr", "pe_ctpa")
           for code, c in zip(pe_codes, pe_cases, strict=True)]  # fmt: skip
    key += [{"kit_id": kit_id, "task": "realism", "code": code, "patient_id": c.patient_id,
             "truth": c.kind} for code, c in zip(vol_codes, volume_cases, strict=True)]  # fmt: skip
    key_df = pd.DataFrame(key, columns=KEY_COLUMNS)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        os.chmod(tmp, 0o755)
        (tmp / "index.html").write_text(html, encoding="utf-8")
        (tmp / "kit.json").write_text(json.dumps(public, indent=2), encoding="utf-8")
        readme = README.format(title=title, n_vol=len(volume_cases), n_pe=len(pe_cases),
                               kit_id=kit_id)  # fmt: skip
        (tmp / "README.txt").write_text(readme, encoding="utf-8")
        atomic_write_text(key_path, key_df.to_csv(index=False))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{kit_id}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = {"PE cases": len(pe_cases), "PE positive": sum(c.label for c in pe_cases),
              "volumes (real-or-generated)": len(volume_cases),
              "real volumes": sum(c.kind == "real" for c in volume_cases)}  # fmt: skip
    return KitInfo(out, key_path, kit_id, counts, len(html.encode()), list(notes or []))


def kit_from_run(
    run_dir: str | Path,
    out: str | Path,
    seed: int = 0,
    n_per_class: int = 10,
    n_realism: int = 10,
    title: str = "X-ray2CTPA reader study",
    about: str | None = None,
) -> KitInfo:
    """Select the cases of a run directory (:mod:`.select`) and build their kit."""
    from xr2ct_lib.study.cases import describe_run, gather_cases
    from xr2ct_lib.study.select import select_cases

    run = gather_cases(run_dir)
    sel = select_cases(run.labels, run.generated_ids, n_per_class, n_realism, seed,
                       where=str(run.run_dir))  # fmt: skip
    pe = [PECase(p, run.labels[p], run.cxr(p), run.generated_ct(p)) for p in sel.pe]
    vols = [VolumeCase(p, "real", run.real_ct(p)) for p in sel.realism_real]
    vols += [VolumeCase(p, "generated", run.generated_ct(p)) for p in sel.realism_generated]
    about = describe_run(run.run_dir) if about is None else about
    return build_kit(pe, vols, out, seed=seed, title=title, about=about, notes=sel.notes)
