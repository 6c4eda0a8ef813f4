"""The model cards under weights/ are generated from each bundle's records and agree with them."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from xr2ct_lib.models import card

WEIGHTS = card.WEIGHTS_DIR


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_every_bundle_has_a_card_that_regenerates_identically():
    names = [d.name for d in card.bundles()]
    assert {"workshop", "smoke", "workshop-clot-reader", "workshop-cxr-reader"} <= set(names)
    assert card.stale_cards() == [], "run `make model-cards` and commit the cards"
    assert card.main(["--check"]) == 0


@pytest.mark.parametrize("name", ["workshop", "workshop-clot-reader", "workshop-cxr-reader"])
def test_cards_say_what_they_were_trained_on_and_not_for_clinical_use(name):
    text = (WEIGHTS / name / card.CARD).read_text()
    meta = front_matter(text)
    assert meta["license"] == "mit" and "not-for-clinical-use" in meta["tags"]
    assert "**Not for clinical use.**" in text and "one real contrast" in text
    assert "/work/" not in text and "/root/" not in text  # no build machine's paths
    for f in (WEIGHTS / name).rglob("*.safetensors"):
        assert card.sha256_file(f) in text


def test_reader_card_metrics_and_command_come_from_heldout_json():
    held = json.loads((WEIGHTS / "workshop-clot-reader" / "heldout.json").read_text())
    text = (WEIGHTS / "workshop-clot-reader" / card.CARD).read_text()
    meta = front_matter(text)
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == held["auc"]
    assert held["command"] in text and f"**{held['auc']:.3f}**" in text
    assert f"{held['by_burden']['lobar']['auc']:.3f}" in text


def test_a_changed_record_or_weight_makes_the_card_stale(tmp_path):
    for name in ("smoke", "smoke-clot-reader"):
        shutil.copytree(WEIGHTS / name, tmp_path / name)
    assert card.stale_cards(tmp_path) == []
    held = tmp_path / "smoke-clot-reader" / "heldout.json"
    record = json.loads(held.read_text())
    record["auc"] = 0.123
    held.write_text(json.dumps(record))
    prov = tmp_path / "smoke" / "provenance.json"
    record = json.loads(prov.read_text())
    record["cohort"]["patients"] = 999
    prov.write_text(json.dumps(record))
    assert card.stale_cards(tmp_path) == [tmp_path / "smoke", tmp_path / "smoke-clot-reader"]
    assert card.main(["--check", "--root", str(tmp_path)]) == 1
    card.write_cards(tmp_path)
    assert card.stale_cards(tmp_path) == []
    assert "0.123" in (tmp_path / "smoke-clot-reader" / card.CARD).read_text()
    assert "999 patients" in (tmp_path / "smoke" / card.CARD).read_text()
    # a weight file that is not the one heldout.json measured is said so
    (tmp_path / "smoke-clot-reader" / "model.safetensors").write_bytes(b"other weights")
    assert "**not** the shipped" in card.model_card(tmp_path / "smoke-clot-reader")


def test_the_generator_card_command_is_a_real_command_line():
    import re
    import shlex

    from xr2ct_lib.cli import build_parser

    text = (WEIGHTS / "workshop" / card.CARD).read_text()
    (line,) = re.findall(r"^xr2ct generate .*$", text, flags=re.M)
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert args.checkpoint == "weights/workshop"
