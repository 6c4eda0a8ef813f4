"""Reader study: case selection, kit files, scoring (Table 6, exact McNemar, binomial test)."""

from __future__ import annotations

import io
import json
from base64 import b64decode
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import beta
from study_run import SHAPE, volume, write_tiny_run

from xr2ct_lib.cli import main
from xr2ct_lib.eval import stats
from xr2ct_lib.study import automated, score
from xr2ct_lib.study.kit import build_kit, key_path_for, kit_from_run, volume_sprite
from xr2ct_lib.study.select import KitInputError, select_cases

# ---------- statistics against hand formulas ----------


def test_mcnemar_exact_p_is_the_two_sided_binomial_sum():
    # 20 cases; reading a right only on 1 case, reading b right only on 7 (b = 1, c = 7)
    y = np.ones(20, int)
    a = np.r_[np.ones(12), [1], np.zeros(7)].astype(int)
    b = np.r_[np.ones(12), [0], np.ones(7)].astype(int)
    r = stats.mcnemar(y, a, b, exact=True)
    assert (r["b"], r["c"]) == (1, 7)
    assert r["p"] == pytest.approx(2 * (comb(8, 0) + comb(8, 1)) / 2**8)  # 0.0703
    # more than 25 discordant cases: the chi-square is used unless exact=True is asked for
    y2 = np.ones(40, int)
    a2, b2 = np.r_[np.ones(10), np.zeros(30)], np.r_[np.zeros(10), np.ones(30)]
    assert not stats.mcnemar(y2, a2, b2)["exact"]
    exact = stats.mcnemar(y2, a2, b2, exact=True)
    assert exact["p"] == pytest.approx(2 * sum(comb(40, i) for i in range(11)) / 2**40)


def test_binomial_test_and_clopper_pearson_interval():
    r = stats.binomial_test(15, 20)
    tail = sum(comb(20, i) for i in range(15, 21)) / 2**20
    assert r["p"] == pytest.approx(2 * tail)  # symmetric under 0.5: twice the upper tail
    assert r["lo"] == pytest.approx(beta.ppf(0.025, 15, 6))
    assert r["hi"] == pytest.approx(beta.ppf(0.975, 16, 5))
    assert stats.binomial_test(10, 20)["p"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="successes"):
        stats.binomial_test(21, 20)


# ---------- scoring a hand-made study ----------


def _key(n_pe=10, n_vol=10, kit_id="k1"):
    rows = []
    for task in ("pe_cxr", "pe_ctpa"):
        rows += [(kit_id, task, f"P{i:02d}", f"p{i}", "pe" if i < n_pe else "no_pe")
                 for i in range(2 * n_pe)]  # fmt: skip
    rows += [(kit_id, "realism", f"V{i:02d}", f"v{i}", "real" if i < n_vol else "generated")
             for i in range(2 * n_vol)]  # fmt: skip
    return pd.DataFrame(rows, columns=["kit_id", "task", "code", "patient_id", "truth"])


def _responses(key, reader, pe_answers, realism_answers, ratings):
    rows = []
    for task in ("pe_cxr", "pe_ctpa"):
        codes = key.code[key.task == task]
        rows += [{"kit_id": "k1", "reader": reader, "task": task, "code": c, "answer": a,
                  "anatomy": "", "consistency": ""}
                 for c, a in zip(codes, pe_answers[task], strict=True)]  # fmt: skip
    codes = key.code[key.task == "realism"]
    rows += [{"kit_id": "k1", "reader": reader, "task": "realism", "code": c, "answer": a,
              "anatomy": str(r[0]), "consistency": str(r[1])}
             for c, a, r in zip(codes, realism_answers, ratings, strict=True)]  # fmt: skip
    return pd.DataFrame(rows)


def test_score_reproduces_a_table6_reader_by_hand():
    key = _key()
    # phase 1 (X-ray): 2 of 10 PE found, 8 of 10 non-PE right → accuracy 0.5
    p1 = ["pe"] * 2 + ["no_pe"] * 8 + ["no_pe"] * 8 + ["pe"] * 2
    # phase 2: 8 of 10 PE, 7 of 10 non-PE → Table 6's Reader 1 (0.75, 0.8, 0.7)
    p2 = ["pe"] * 8 + ["no_pe"] * 2 + ["no_pe"] * 7 + ["pe"] * 3
    real = ["real"] * 9 + ["generated"] + ["generated"] * 7 + ["real"] * 3  # 16 of 20 right
    ratings = [(5, 5)] * 10 + [(3, 4), (4, 4), (2, 3), (3, 3), (4, 5), (3, 4), (4, 4), (3, 3),
                               (2, 4), (4, 3)]  # fmt: skip
    df = _responses(key, "Reader 1", {"pe_cxr": p1, "pe_ctpa": p2}, real, ratings)
    s = score.score_responses(df, key)

    ph2 = s.pe.loc[("Reader 1", score.PHASES["pe_ctpa"])]
    assert (ph2.accuracy, ph2.sensitivity, ph2.specificity) == pytest.approx((0.75, 0.8, 0.7))
    assert ph2.ppv == pytest.approx(8 / 11) and ph2.npv == pytest.approx(7 / 9)
    ph1 = s.pe.loc[("Reader 1", score.PHASES["pe_cxr"])]
    assert (ph1.accuracy, ph1.sensitivity, ph1.specificity) == pytest.approx((0.5, 0.2, 0.8))

    # discordant cases: PE 2–7 right only in phase 2; the 8th non-PE right only in phase 1
    right1 = np.array([a == t for a, t in zip(p1, ["pe"] * 10 + ["no_pe"] * 10, strict=True)])
    right2 = np.array([a == t for a, t in zip(p2, ["pe"] * 10 + ["no_pe"] * 10, strict=True)])
    b, c = int(np.sum(right1 & ~right2)), int(np.sum(~right1 & right2))
    cmp = s.comparison.loc["Reader 1"]
    assert (cmp["right only in phase 1"], cmp["right only in phase 2"]) == (b, c) == (1, 6)
    p = 2 * sum(comb(b + c, i) for i in range(min(b, c) + 1)) / 2 ** (b + c)
    assert cmp["McNemar exact p"] == pytest.approx(p)

    r = s.realism.loc["Reader 1"]
    assert (r.correct, r.volumes) == (16, 20)
    assert r["binomial p (vs 0.5)"] == pytest.approx(2 * sum(comb(20, i) for i in range(16, 21))
                                                     / 2**20)  # fmt: skip
    gen_ratings = np.array(ratings[10:])
    assert r["anatomy, generated"] == pytest.approx(gen_ratings[:, 0].mean())
    assert r["consistency, generated"] == pytest.approx(gen_ratings[:, 1].mean())
    assert r["anatomy, real"] == 5.0


def _write(df, path):
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.drop(columns="answer"), r"header: missing column\(s\) \['answer'\]"),
        (lambda d: d.assign(kit_id=["zz"] + list(d.kit_id[1:])), r"row 2: kit_id 'zz'"),
        (
            lambda d: d.assign(code=list(d.code[:3]) + ["PXXXX"] + list(d.code[4:])),
            r"row 5: case code 'PXXXX' is not a pe_cxr case",
        ),
        (
            lambda d: d.assign(answer=list(d.answer[:1]) + ["maybe"] + list(d.answer[2:])),
            r"row 3: answer 'maybe' to pe_cxr",
        ),
        (
            lambda d: d.assign(anatomy=list(d.anatomy[:-1]) + ["7"]),
            r"row 61: anatomy rating '7' of case V19; expected 1–5",
        ),
        (lambda d: pd.concat([d, d.iloc[[0]]]), r"row 62: case P00 of pe_cxr answered twice"),
        (lambda d: d.drop(index=[25]), r"answered 19 of 20 pe_ctpa cases; missing \['P05'\]"),
        (lambda d: d.assign(reader=[" "] * len(d)), r"row 2: empty reader name"),
    ],
)
def test_bad_response_files_name_the_file_row_and_problem(tmp_path, mutate, message):
    key = _key()
    good = _responses(key, "R", {"pe_cxr": ["pe"] * 20, "pe_ctpa": ["no_pe"] * 20},
                      ["real"] * 20, [(3, 3)] * 20)  # fmt: skip
    path = _write(mutate(good.copy()), tmp_path / "reader-R.csv")
    with pytest.raises(score.ResponseError, match=message) as e:
        score.read_responses(path, key)
    assert str(path) in str(e.value)


# ---------- the kit from a run directory ----------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return write_tiny_run(tmp_path_factory.mktemp("run") / "run")


def test_selection_is_seeded_balanced_and_disjoint():
    labels = {f"p{i}": int(i % 3 == 0) for i in range(60)}
    generated = [f"p{i}" for i in range(36)]
    a = select_cases(labels, generated, 5, 4, seed=1)
    assert a == select_cases(labels, generated, 5, 4, seed=1)
    assert a != select_cases(labels, generated, 5, 4, seed=2)
    assert sorted(labels[p] for p in a.pe) == [0] * 5 + [1] * 5
    assert set(a.pe) <= set(generated) and set(a.realism_generated) <= set(generated)
    assert not set(a.pe) & set(a.realism_generated)  # enough generated volumes: no overlap
    assert not set(a.realism_real) & (set(a.pe) | set(a.realism_generated))
    # the real volumes match the generated ones' PE mix
    assert sum(labels[p] for p in a.realism_real) == sum(labels[p] for p in a.realism_generated)
    assert not a.notes


def test_selection_names_what_is_missing():
    labels = {f"p{i}": int(i < 4) for i in range(30)}
    with pytest.raises(KitInputError, match=r"4 PE and 16 non-PE \(missing: 6 more PE\)"):
        select_cases(labels, [f"p{i}" for i in range(20)], 10, 10, where="runs/x")
    few = select_cases(labels, [f"p{i}" for i in range(10)], 3, 6)
    assert few.notes and "belong to patients of the PE task" in few.notes[0]


def test_kit_files_blind_the_cases_and_keep_the_key_outside(tiny_run, tmp_path):
    info = kit_from_run(tiny_run, tmp_path / "KIT", seed=3, n_per_class=4, n_realism=3)
    assert info.key_path == tmp_path / "KIT-key.csv" and info.key_path.is_file()
    assert sorted(p.name for p in info.path.iterdir()) == ["README.txt", "index.html", "kit.json"]
    key = pd.read_csv(info.key_path, dtype=str)
    assert len(key) == 4 * 2 * 2 + 3 * 2 and set(key.kit_id) == {info.kit_id}
    text = "".join(p.read_text() for p in info.path.iterdir())
    for pid in key.patient_id.unique():
        assert pid not in text  # no patient id anywhere in the kit
    assert "no_pe" not in text.split("kit-data")[1].split("</script>")[0]  # no truth in the data
    meta = json.loads((info.path / "kit.json").read_text())
    for task in ("pe_cxr", "pe_ctpa", "realism"):
        assert sorted(meta["tasks"][task]) == sorted(key.code[key.task == task])
    # shuffled: the kit's order is not the key's (selection) order
    assert meta["tasks"]["pe_cxr"] != list(key.code[key.task == "pe_cxr"])
    # same seed, same kit, byte for byte; the rebuild replaces the old folder atomically
    html = (info.path / "index.html").read_bytes()
    again = kit_from_run(tiny_run, tmp_path / "KIT", seed=3, n_per_class=4, n_realism=3)
    assert (again.path / "index.html").read_bytes() == html
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_sprite_round_trip_is_the_8bit_volume():
    rng = np.random.default_rng(0)
    v = volume(rng, generated=False)
    s = volume_sprite(v)
    d, h, w = SHAPE
    sheet = np.asarray(Image.open(io.BytesIO(b64decode(s["sprite"].split(",", 1)[1]))))
    tiles = [sheet[(z // s["cols"]) * h : (z // s["cols"] + 1) * h,
                   (z % s["cols"]) * w : (z % s["cols"] + 1) * w] for z in range(d)]  # fmt: skip
    back = np.stack(tiles).astype(np.float32) / 127.5 - 1.0
    assert s["shape"] == [d, h, w]
    assert np.abs(back - v).max() <= 1 / 127.5 / 2 + 1e-6  # half a grey level


def test_bad_arrays_and_a_foreign_folder_are_refused_before_writing(tmp_path):
    from xr2ct_lib.study.kit import PECase, VolumeCase

    rng = np.random.default_rng(0)
    cxr = rng.random((24, 24)).astype(np.float32)
    pe = [PECase("a", 1, cxr, volume(rng, True)), PECase("b", 0, cxr, volume(rng, True))]
    vols = [VolumeCase("c", "real", volume(rng, False)),
            VolumeCase("d", "generated", volume(rng, True))]  # fmt: skip
    bad = volume(rng, True)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="patient b: generated CTPA: contains NaN"):
        build_kit(pe[:1] + [PECase("b", 0, cxr, bad)], vols, tmp_path / "KIT")
    with pytest.raises(ValueError, match=r"patient a: X-ray: expected a 2D image"):
        build_kit([PECase("a", 1, cxr[None], pe[0].generated_ct), pe[1]], vols, tmp_path / "K")
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="is not a reader kit"):
        build_kit(pe, vols, tmp_path / "mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing written


def test_cli_reader_kit_error_and_reader_score_end_to_end(tiny_run, tmp_path, capsys):
    kit = tmp_path / "KIT"
    assert main(["reader-kit", "--run-dir", str(tiny_run), "--out", str(kit)]) == 1
    err = capsys.readouterr().err
    assert "needs 10 PE and 10 non-PE" in err and str(tiny_run) in err and not kit.exists()
    assert main(["reader-kit", "--run-dir", str(tiny_run), "--out", str(kit),
                 "--cases-per-class", "4", "--volumes-per-kind", "3"]) == 0  # fmt: skip
    key = score.read_key(key_path_for(kit))
    # a reader who answers the truth in phase 2 and "no PE" in phase 1
    rows = []
    for t, c, truth in zip(key.task, key.code, key.truth, strict=True):
        ans = {"pe_cxr": "no_pe", "pe_ctpa": truth, "realism": "generated"}[t]
        rows.append([key.kit_id[0], "Dr A", t, c, ans, 3 if t == "realism" else "", 4])
    cols = ["kit_id", "reader", "task", "code", "answer", "anatomy", "consistency"]
    f = _write(pd.DataFrame(rows, columns=cols), tmp_path / "a.csv")
    assert main(["reader-score", str(kit), str(f), "--out", str(tmp_path / "tables")]) == 0
    out = capsys.readouterr().out
    assert "Table 6" in out and "McNemar" in out
    cmp = pd.read_csv(tmp_path / "tables" / "phase_comparison.csv", index_col=0)
    assert cmp.loc["Dr A", "right only in phase 2"] == 4  # the four PE cases
    assert cmp.loc["Dr A", "McNemar exact p"] == pytest.approx(2 / 2**4)
    # the same reader in two files, and a key of another kit, are refused
    assert main(["reader-score", str(kit), str(f), str(f)]) == 1
    assert "appears in" in capsys.readouterr().err
    other = _write(key.assign(kit_id="other"), tmp_path / "other-key.csv")
    assert main(["reader-score", str(kit), str(f), "--key", str(other)]) == 1
    assert "belongs to kit other" in capsys.readouterr().err


def test_automated_readers_answer_in_the_kit_format(tmp_path):
    from xr2ct_lib.eval.crossval import CVResult, FoldResult

    key = _key(n_pe=3, n_vol=2)
    ids = [f"p{i}" for i in range(6)]
    y = np.array([1, 1, 1, 0, 0, 0])
    r = CVResult([FoldResult(0, 0.5, y, np.array([0.9, 0.2, 0.7, 0.1, 0.6, 0.3]), ids)])
    r.to_csv(tmp_path, automated.CXR_CV)
    pred = automated.cv_predictions(tmp_path, automated.CXR_CV)
    assert pred.to_dict() == {"p0": 1, "p1": 0, "p2": 1, "p3": 0, "p4": 1, "p5": 0}
    assert automated.cv_predictions(tmp_path, automated.GENERATED_CV) is None
    resp, missing = automated.automated_responses(key, {"pe_cxr": pred.drop("p5")}, "X-ray CNN")
    assert missing == {"pe_cxr": ["P05"]} and set(resp.task) == {"pe_cxr"}
    s = score.score_responses(resp, key)
    m = s.pe.loc[("X-ray CNN", score.PHASES["pe_cxr"])]
    assert (m.cases, m.sensitivity, m.specificity) == (5, pytest.approx(2 / 3), 0.5)
    assert s.comparison.empty and any("no answers to phase 2" in n for n in s.notes)


def test_key_path_is_beside_the_kit():
    assert key_path_for(Path("/a/b/KIT/")) == Path("/a/b/KIT-key.csv")


def test_book_preview_orients_planes_like_the_kit():
    from study_run import MARK

    from xr2ct_lib.study.preview import kit_plane

    v = volume(np.random.default_rng(0), generated=True)  # marker: superior, anterior, right
    for plane in ("axial", "coronal", "sagittal"):
        img = kit_plane(v, plane, 1)
        assert img[:MARK, :MARK].min() == 1.0, plane  # top-left, as the browser test checks
        assert kit_plane(v, plane).shape == {"axial": SHAPE[1:], "coronal": (SHAPE[0], SHAPE[2]),
                                             "sagittal": SHAPE[:2]}[plane]  # fmt: skip
    assert kit_plane(v, "axial", SHAPE[0] // 2)[:MARK, :MARK].max() < 1.0
    with pytest.raises(ValueError, match="outside"):
        kit_plane(v, "axial", SHAPE[0] + 1)


def test_automated_table_names_what_each_reader_read_and_flags_constant_answers():
    pe = pd.DataFrame(
        [{"reader": "automated readers", "phase": score.PHASES["pe_cxr"], "cases": 20,
          "sensitivity": 0.6, "specificity": 0.7, "tp": 6, "fp": 3, "tn": 7, "fn": 4},
         {"reader": "automated readers", "phase": score.PHASES["pe_ctpa"], "cases": 20,
          "sensitivity": 1.0, "specificity": 0.0, "tp": 10, "fp": 10, "tn": 0, "fn": 0}]
    ).set_index(["reader", "phase"])  # fmt: skip
    table = automated.automated_table(pe)
    phases = list(table.index.get_level_values("phase"))
    assert phases[1] == "phase 2: clot reader on the generated CTPA alone"
    assert "X-ray +" not in " ".join(phases)
    lines = automated.constant_callers(table)
    assert len(lines) == 1 and "called all 20 cases PE" in lines[0]
    assert "phase 2: clot reader" in lines[0]
