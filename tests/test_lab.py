"""`make lab`: the notebooks open as notebooks in JupyterLab, on this checkout's venv kernel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from xr2ct_lib.config import REPO_ROOT


def test_jupytext_pairs_each_notebook_with_an_ipynb_under_build():
    from jupytext.config import load_jupytext_configuration_file
    from jupytext.formats import long_form_multiple_formats
    from jupytext.paired_paths import paired_paths

    config = load_jupytext_configuration_file(str(REPO_ROOT / "jupytext.toml"))
    source = REPO_ROOT / "notebooks" / "01_data_and_preprocessing.py"
    formats = long_form_multiple_formats(config.default_formats(str(source)))
    (py,) = [f for f in formats if f["extension"] == ".py"]
    assert py["format_name"] == "percent"
    pairs = {fmt["extension"]: path for path, fmt in paired_paths(str(source), py, formats)}
    assert Path(pairs[".ipynb"]) == REPO_ROOT / "_build" / "notebooks" / f"{source.stem}.ipynb"
    assert "_build/" in (REPO_ROOT / ".gitignore").read_text().split()


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="runs in the project's venv")
def test_venv_opens_py_as_notebook_and_its_kernel_is_this_venv():
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyterlab.commands import get_app_dir

    overrides = Path(get_app_dir()) / "settings" / "overrides.json"
    viewers = json.loads(overrides.read_text())["@jupyterlab/docmanager-extension:plugin"]
    assert viewers["defaultViewers"]["python"] == "Jupytext Notebook"
    assert (Path(get_app_dir()) / "static").is_dir()  # the lab assets are found from the venv
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
    assert spec.display_name == "Python 3"  # as the notebooks name it: saves keep their header
    from jupyter_core.paths import jupyter_config_path

    enabled = {}
    for folder in jupyter_config_path():
        for f in sorted(Path(folder, "jupyter_server_config.d").glob("*.json")):
            enabled.update(json.loads(f.read_text())["ServerApp"]["jpserver_extensions"])
    assert enabled.get("jupyterlab_jupytext") is True  # jupytext's contents manager


def test_saving_in_jupyterlab_leaves_every_notebook_as_committed(tmp_path):
    """What one Ctrl+S in JupyterLab does, through jupytext's contents manager as `make lab`
    runs it: read the .py as a notebook, take on the kernel's spec and language_info, save.
    The .py must come back byte for byte (git status clean); the outputs go to the pair."""
    import asyncio
    import shutil

    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
    from jupytext.async_contentsmanager import build_async_jupytext_contents_manager_class

    shutil.copytree(REPO_ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copy(REPO_ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    manager = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)
    cm = manager(root_dir=str(tmp_path))
    sources = sorted((tmp_path / "notebooks").glob("[0-9][0-9]_*.py"))
    assert len(sources) >= 12
    before = {p.name: p.read_text() for p in sources}

    async def save_each():
        for p in sources:
            path = f"notebooks/{p.name}"
            nb = (await cm.get(path, content=True, type="notebook"))["content"]
            nb["metadata"]["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                            "name": "python3"}  # fmt: skip
            nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7",
                                               "file_extension": ".py"}  # fmt: skip
            code = next(c for c in nb["cells"] if c["cell_type"] == "code")
            code["execution_count"] = 1
            code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]
            await cm.save({"type": "notebook", "format": "json", "content": nb}, path)

    asyncio.run(save_each())
    changed = [p.name for p in sources if p.read_text() != before[p.name]]
    assert changed == [], f"a save rewrote {changed}"
    assert (tmp_path / "_build" / "notebooks" / sources[0].with_suffix(".ipynb").name).is_file()
