"""pyproject.toml declares every package the code imports, and nothing it does not use."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from xr2ct_lib.config import REPO_ROOT

# declared for what they run, not for an import: the book builder, the linter, the kernel,
# the browser driver (pytest.importorskip), BiomedCLIP's text tower (through open_clip),
# JupyterLab's MyST renderer (a lab extension: {cite} roles render in `make lab`)
TOOLS = {"jupyter-book", "ruff", "ipykernel", "playwright", "transformers", "jupyterlab-myst"}
LOCAL = {"xr2ct_lib", "tiny_run", "study_run", "real_cohort", "diffusion_tiny"}


def _name(dist: str) -> str:
    return re.split(r"[<>=!~\[ ;]", dist, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(d) for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {_name(d) for d in extra}
    return names


def _importorskip(node) -> bool:
    """``pytest.importorskip("module")``: an import that skips when the module is missing."""
    return (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "importorskip"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
    )


def imported_modules() -> set[str]:
    mods = set()
    for folder in ("xr2ct_lib", "notebooks", "tests", "benchmarks"):
        for f in (REPO_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    mods |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    mods.add(node.module.split(".")[0])
                elif _importorskip(node):
                    mods.add(str(node.args[0].value).split(".")[0])
    return mods - set(sys.stdlib_module_names) - LOCAL


def test_every_imported_package_is_declared_and_every_declared_one_used():
    dists = packages_distributions()
    used = set()
    for mod in imported_modules():
        assert mod in dists, f"{mod}: imported but installed by no distribution"
        used |= {_name(d) for d in dists[mod]}
    names = declared()
    assert used - names == set(), "imported but not in pyproject.toml"
    assert names - used - TOOLS == set(), "declared but imported nowhere"
