"""Config in one place: profiles hold every run setting, and loading a config writes nothing."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from xr2ct_lib import book
from xr2ct_lib.config import PROFILES, REPO_ROOT, get_profile, load_config


def test_load_config_has_no_side_effects(tmp_path):
    run = tmp_path / "run"
    cfg = load_config("smoke", None, run, 3)
    assert cfg.run_dir == run and cfg.seed == 3 and cfg.profile is PROFILES["smoke"]
    assert not run.exists()  # validate-manifest and friends may call it freely


def test_setup_records_the_run_and_sets_threads(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        cfg = book.setup("smoke", None, tmp_path / "run", 5, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["seed"] == 5 and saved["profile"]["name"] == "smoke"
    assert saved["profile"]["stage_lrs"] == list(cfg.profile.stage_lrs)
    assert capsys.readouterr().out.strip() == cfg.describe()


def test_profiles_carry_the_settings_code_used_to_branch_on():
    paper, workshop, smoke = (PROFILES[k] for k in ("paper", "workshop", "smoke"))
    assert paper.stage_lrs == (1e-4, 1e-4, 1e-5)  # the paper's Implementation details
    assert paper.ddpm_steps == paper.diffusion_steps == 1000
    assert paper.latent_classifier == "densenet121" and workshop.latent_classifier == "scaled"
    assert paper.cv_test_folds == workshop.cv_test_folds == tuple(range(6))
    assert smoke.cv_test_folds == (0, 1) and smoke.ddpm_steps < smoke.diffusion_steps
    for p in PROFILES.values():
        assert 0 <= p.test_fold < p.n_folds


@pytest.mark.parametrize(
    "change, message",
    [
        ({"test_fold": 6}, "test_fold 6"),
        ({"cv_folds": (0, 7)}, "cv_folds"),
        ({"latent_classifier": "resnet"}, "latent_classifier"),
    ],
)
def test_bad_profile_values_fail_clearly(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(PROFILES["smoke"], **change)
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("huge")


def test_no_code_branches_on_a_profile_name():
    pattern = re.compile(r"""\.name\s*[!=]=\s*["'](smoke|workshop|paper)["']""")
    sources = [
        *Path(REPO_ROOT, "xr2ct_lib").rglob("*.py"),
        *Path(REPO_ROOT, "notebooks").glob("*.py"),
    ]
    hits = [
        f"{path.name}:{i}: {line.strip()}"
        for path in sorted(sources)
        for i, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert not hits, "read a Profile field instead:\n" + "\n".join(hits)


def test_denoiser_recipe_names_what_shapes_a_denoiser():
    from xr2ct_lib.utils import recipe_key

    work = PROFILES["workshop"]
    assert work.denoiser_recipe()["cond_embed"] == "projection"
    raw = dataclasses.replace(work, cond_embed_type=None)
    assert "cond_embed" not in raw.denoiser_recipe()  # keys made before projections stay valid
    other_halves = "independent" if work.halves == "joint" else "joint"
    keys = {recipe_key(**p.denoiser_recipe()) for p in (
        work, raw, dataclasses.replace(work, batch_size=work.batch_size + 1),
        dataclasses.replace(work, prediction_type="v_prediction"),
        dataclasses.replace(work, halves=other_halves))}  # fmt: skip
    assert len(keys) == 5
