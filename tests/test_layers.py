"""The library's layers, one way: base → data → models → run → train → generation → eval →
viz → study (the reader-study kit) → book → cli; no import points upward, none goes round a
circle.

Every ``xr2ct_lib`` import of every module is read from its source (imports inside functions
included), so a lazy import cannot hide a dependency on a higher layer or close a circle.
Imports under ``if TYPE_CHECKING:`` only name the type of an argument the caller passes in (an
explicit interface, e.g. the pipeline handed to training) and are not counted.

:data:`TABLE` is the layer table; the README's code map is generated from it
(``python tests/test_layers.py`` rewrites that section;
:func:`test_the_readme_code_map_is_the_table` checks that they agree).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import xr2ct_lib

PACKAGE = Path(xr2ct_lib.__file__).parent
README = PACKAGE.parent / "README.md"

# (package or module, layer, what it holds): lower layer first; a module may import its own
# entry and the entries of lower layers, never a higher one.
TABLE = [
    ("config", 0,
        "the profiles (every size, step count, learning rate, sampler default) and "
        "`RunConfig`"),
    ("files", 0, "atomic writers: text, safetensors, NIfTI"),
    ("utils", 0, "seeding, devices, progress bars, recipe keys"),
    ("checkpoint", 0, "safetensors + JSON model checkpoints"),
    ("data", 1,
        "the manifest and its validation, reading CTs and X-rays (one suffix list), the "
        "paper's preprocessing, folds, the prepared cohort, the simulated cohort (`phantom/`,"
        " `drr.py`)"),
    ("models", 2,
        "the networks (VAE, CXR encoder, denoiser, classifiers, I3D, LPIPS), the noise "
        "schedule and training objective, the latent normaliser, the bundle format, LoRA"),
    ("run", 3,
        "what a run has on disk: which networks it uses (shipped or trained), the cohort's "
        "cached latents and embeddings (loaders only read), the one step that writes a "
        "missing cache"),
    ("train", 4,
        "training: the stand-ins, the staged diffusion training, the bundle (`make weights`),"
        " the classifiers, the pretrained readers (`readers/`), the collection, ablations, "
        "adaptation"),
    ("generation", 5,
        "`XRay2CTPAPipeline`, the samplers (one registry), the run's generator, the book's "
        "volume cache, `xr2ct generate` for one X-ray or a cohort"),
    ("eval", 6, "metrics, statistics, cross-validation, the tables and their readings"),
    ("viz", 7, "figures, and tables saved with their provenance"),
    ("study", 8, "the reader-study kit (offline HTML) and its scoring"),
    ("book", 9, "each notebook's `setup`; running the notebooks"),
    # the xr2ct command: shared helpers <- the commands <- the parser <- main
    ("cli.common", 10, "the user error, paths, the help format, the cohort options"),
    ("cli.data_commands", 11, "validate-manifest, prepare"),
    ("cli.train_commands", 11, "train, add-stages, the pretraining commands"),
    ("cli.generate_command", 11, "generate"),
    ("cli.book_commands", 11, "run-notebooks, reader-kit, reader-score"),
    ("cli.parser", 12, "the argument parser, from every command module"),
    ("cli", 13, "`main` and its error lines (`cli/__init__.py`); `__main__` runs it"),
]  # fmt: skip
LAYERS = {name: layer for name, layer, _ in TABLE}


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
    assert [layer_of(m) for _, m in found] == [1, 6, 7, 13, 12]
    assert layer_of("xr2ct_lib.cli") > layer_of("xr2ct_lib.cli.parser")  # main above the parser
    with pytest.raises(KeyError, match="no layer"):
        layer_of("xr2ct_lib.somewhere.new")


# ------------------------------------------------------------------------------ circles
def import_graph(paths=None) -> dict[str, set[str]]:
    """Module → the library modules it imports (at any depth; a package import is its
    ``__init__``), over ``paths`` (default: every module of the library)."""
    graph: dict[str, set[str]] = {}
    for path in MODULES if paths is None else paths:
        here = module_name(path)
        graph.setdefault(here, set()).update(t for _, t in library_imports(path) if t != here)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of two or more modules (Tarjan), each as the
    modules in it, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_the_circle_finder_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "xr2ct_lib" / "m"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from xr2ct_lib.m.b import f\n")
    (pkg / "b.py").write_text("def f():\n    import xr2ct_lib.m.c\n")
    (pkg / "c.py").write_text("import xr2ct_lib.m.a\n")
    (pkg / "d.py").write_text("if TYPE_CHECKING:\n    from xr2ct_lib.m.a import f\n")
    graph = {f"xr2ct_lib.m.{p.stem}": {t for _, t in library_imports(p)} for p in pkg.glob("*.py")}
    assert circles(graph) == [["xr2ct_lib.m.a", "xr2ct_lib.m.b", "xr2ct_lib.m.c"]]


# ----------------------------------------------------------------------------- code map
MAP_START = "<!-- code map: generated from TABLE in tests/test_layers.py (run it to rewrite) -->"
MAP_END = "<!-- end of the code map -->"


def _modules_of(name: str) -> list[str]:
    """The files of a layer-table entry: its module, or its package's modules and
    sub-packages (``phantom/``), in name order."""
    where = PACKAGE.joinpath(*name.split("."))
    if where.with_suffix(".py").is_file():
        return [f"{where.name}.py"]
    subs = [p for p in sorted(where.iterdir()) if (p / "__init__.py").is_file()]
    files = [p for p in sorted(where.glob("*.py")) if p.name not in ("__init__.py", "__main__.py")]
    return [f"{p.name}/" for p in subs] + [p.name for p in files]


def code_map() -> str:
    """The README's code map: one row per layer-table entry (the cli entries as one row)."""
    rows = ["| layer | package | what it holds | modules |", "|---|---|---|---|"]
    done = set()
    for name, layer, what in TABLE:
        top = name.split(".")[0]
        if top == "cli":
            if "cli" in done:
                continue
            done.add("cli")
            what = "the `xr2ct` command: " + "; ".join(
                f"`{n.split('.')[-1] if '.' in n else '__init__'}`: {w}"
                for n, _, w in TABLE
                if n.split(".")[0] == "cli"
            )
            name = "cli"
        package = f"`{name}/`" if (PACKAGE / name).is_dir() else f"`{name}.py`"
        mods = ", ".join(f"`{m}`" for m in _modules_of(name)) if (PACKAGE / name).is_dir() else ""
        rows.append(f"| {layer} | {package} | {what} | {mods} |")
    return "\n".join([MAP_START, *rows, MAP_END])


def test_every_table_entry_exists():
    for name, _, _ in TABLE:
        assert is_module(f"xr2ct_lib.{name}"), f"xr2ct_lib.{name} is in TABLE but not a module"


def test_the_readme_code_map_is_the_table():
    text = README.read_text()
    found = re.search(re.escape(MAP_START) + r".*?" + re.escape(MAP_END), text, flags=re.S)
    assert found and found.group(0) == code_map(), (
        "README.md's code map differs from tests/test_layers.py TABLE: "
        "run `python tests/test_layers.py`"
    )


def test_only_the_base_modules_sit_at_the_top():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert top == ["book", "checkpoint", "config", "files", "utils"]


if __name__ == "__main__":  # rewrite the README's code map from TABLE
    text = README.read_text()
    pattern = re.escape(MAP_START) + r".*?" + re.escape(MAP_END)
    if not re.search(pattern, text, flags=re.S):
        raise SystemExit(f"{README}: no code map markers ({MAP_START} … {MAP_END})")
    README.write_text(re.sub(pattern, lambda _: code_map(), text, flags=re.S))
    print(f"{README}: code map rewritten")
