"""The library's layers: data ← models ← train ← eval ← viz/book; no import points upward.

Every ``xr2ct_lib`` import of every module is read from its source (imports inside functions
included), so a lazy import cannot hide a dependency on a higher layer. Imports under
``if TYPE_CHECKING:`` only name the type of an argument the caller passes in (an explicit
interface, e.g. the loss terms handed to the diffusion model) and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import xr2ct_lib

PACKAGE = Path(xr2ct_lib.__file__).parent

# lower number = lower layer; a module may import its own layer and the layers below
LAYERS = {
    "config": 0,  # the run's profile and paths
    "files": 0,  # atomic writers
    "utils": 0,  # seeding, devices, progress bars
    "checkpoint": 0,  # safetensors + JSON model checkpoints
    "data": 1,  # manifest, IO, preprocessing, folds, the cohort
    "models": 2,  # networks, their loaders and the bundle format
    "run": 3,  # what a run has on disk: its networks, cached latents and embeddings
    "train": 4,  # training loops and the train-or-reuse cache
    "generation": 5,  # the pipeline, samplers, one X-ray or a cohort → generated CTs
    "eval": 6,  # metrics, statistics, cross-validation
    "viz": 7,  # figures and tables with their provenance
    "reader": 7,  # the reader-study kit and its scoring
    "book": 8,  # running the notebooks, their setup
    # the xr2ct command: shared helpers <- the commands <- the parser <- main
    "cli.common": 9,  # the user error, paths, the help format, the cohort options
    "cli.data_commands": 10,  # validate-manifest, prepare
    "cli.train_commands": 10,  # train, add-stages
    "cli.generate_command": 10,  # generate
    "cli.book_commands": 10,  # run-notebooks, reader-kit, reader-score
    "cli.parser": 11,  # the argument parser, from every command module
    "cli": 12,  # main and its error lines (cli/__init__.py); __main__ runs it
}


def layer_of(module: str) -> int:
    """Layer of ``xr2ct_lib.<top>...`` (its longest entry in LAYERS, e.g. ``cli.parser`` before
    ``cli``); an unplaced top-level module is an error."""
    parts = module.split(".")[1:]
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    top = parts[0] if parts else ""
    raise KeyError(f"xr2ct_lib.{top} has no layer: add it to LAYERS in {__file__}")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return isinstance(node, ast.If) and name == "TYPE_CHECKING"


def _walk(node: ast.AST):
    """``ast.walk`` that does not enter ``if TYPE_CHECKING:`` blocks."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not _is_type_checking(child):
            yield from _walk(child)


def library_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``xr2ct_lib`` import in the file, at any depth."""
    out = []
    for node in _walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("xr2ct_lib.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "xr2ct_lib":  # from xr2ct_lib import data, ...
                # package attributes such as __version__ are not modules
                out += [
                    (node.lineno, f"xr2ct_lib.{a.name}")
                    for a in node.names
                    if not a.name.startswith("__")
                ]
            elif node.module.startswith("xr2ct_lib."):
                # from xr2ct_lib.cli import main, parser: xr2ct_lib.cli and xr2ct_lib.cli.parser
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found = (node.lineno, sub if is_module(sub) else node.module)
                    if found not in out:
                        out.append(found)
    return out


def is_module(name: str) -> bool:
    """Whether ``xr2ct_lib.a.b`` is a module or package of the library (not a name in one)."""
    where = PACKAGE.joinpath(*name.split(".")[1:])
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


# a sub-package's __init__ is checked too (cli/__init__.py holds main); the package's own is empty
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_module_has_a_layer():
    for path in MODULES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_from_a_higher_layer(path):
    here = module_name(path)
    upward = [
        f"{path.name}:{line} imports {target} (layer {layer_of(target)} > {layer_of(here)})"
        for line, target in library_imports(path)
        if layer_of(target) > layer_of(here)
    ]
    assert not upward, "\n".join(upward)


def test_the_checker_sees_lazy_and_upward_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "from xr2ct_lib.data.folds import fold_split\n"
        "def g():\n    from xr2ct_lib.eval import stats\n    import xr2ct_lib.viz.volumes\n"
        "if TYPE_CHECKING:\n    from xr2ct_lib.book import setup\n"
        "from xr2ct_lib.cli import main, parser\n"
    )
    found = library_imports(f)
    assert found == [
        (1, "xr2ct_lib.data.folds"),
        (3, "xr2ct_lib.eval.stats"),
        (4, "xr2ct_lib.viz.volumes"),
        (7, "xr2ct_lib.cli"),  # main is a function of xr2ct_lib.cli
        (7, "xr2ct_lib.cli.parser"),  # parser a module in it
    ]
    assert [layer_of(m) for _, m in found] == [1, 6, 7, 12, 11]
    assert layer_of("xr2ct_lib.cli") > layer_of("xr2ct_lib.cli.parser")  # main above the parser
    with pytest.raises(KeyError, match="no layer"):
        layer_of("xr2ct_lib.somewhere.new")
