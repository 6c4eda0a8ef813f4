"""`make lab` in a real browser: one Ctrl+S leaves `git status` clean, and `{cite}` renders.

JupyterLab from this checkout's venv (as `make lab` starts it: its jupytext contents manager,
its default viewer for .py files, its python3 kernel and lab extensions) serves a git copy
of a chapter; headless Chromium (Debian's, driven by Playwright as in the reader-kit test,
never `playwright install`) opens the .py as a notebook, waits for the kernel, and presses
Ctrl+S. The .py must come back as committed. test_lab.py checks the same save through the
contents manager alone; this one goes through what a participant does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from xr2ct_lib.config import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TOKEN = "xr2ct-lab-save-test"

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium: `make browser`"
    ),
    pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="runs in the project's venv"),
]


def _opening_cell(path: Path) -> str:
    return path.read_text().split("# %% [markdown]", 2)[1].split("# %%")[0]


def _cited_notebook() -> Path:
    """The first chapter whose opening markdown cell cites (its cell shows when the page opens)."""
    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        if "{cite}`" in _opening_cell(path):
            return path
    raise AssertionError("no chapter cites in its opening cell")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, path: str, method: str = "GET"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        headers={"Authorization": f"token {TOKEN}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line names ``text`` (the kernels name their connection file)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@contextmanager
def lab(root: Path, state: Path):
    """JupyterLab serving ``root``, its user config and runtime under ``state``; on exit the
    server and every kernel it started are gone."""
    port = _free_port()
    runtime = state / "runtime"
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(state / "config"),  # the user's own settings stay out
        JUPYTER_DATA_DIR=str(state / "data"),
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTERLAB_SETTINGS_DIR=str(state / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
        IPYTHONDIR=str(state / "ipython"),
    )
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
               f"--IdentityProvider.token={TOKEN}"]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (state / "lab.log").open("wb")
    server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (state / "lab.log").read_text()
            try:
                if _api(port, "/api/status") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (state / "lab.log").read_text()
            time.sleep(0.2)
        yield port
    finally:
        try:  # a clean shutdown stops the kernels too
            _api(port, "/api/shutdown", method="POST")
            server.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        for pid in _processes_mentioning(str(runtime)):
            os.kill(pid, signal.SIGKILL)
        log.close()


def test_ctrl_s_in_jupyterlab_leaves_git_status_clean_and_cite_renders(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    source = _cited_notebook()
    keys = re.findall(r"\{cite\}`([^`]+)`", _opening_cell(source))
    repo, state = tmp_path / "checkout", tmp_path / "state"
    (repo / "notebooks").mkdir(parents=True)
    state.mkdir()
    for name in ("jupytext.toml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, repo / name)
    shutil.copy(source, repo / "notebooks" / source.name)
    git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@localhost",
           "-c", "commit.gpgsign=false"]  # fmt: skip
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "as committed"], check=True)

    with lab(repo, state) as port, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/{source.name}?token={TOKEN}")
            # jupytext's notebook view (the default viewer make setup sets), kernel connected
            panel = page.locator(".jp-NotebookPanel:visible")
            panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()

            # the opening cell, rendered by jupyterlab-myst (its own widget, .myst): each
            # {cite}`key` becomes a citation of the key, not the raw role
            opening = panel.locator(".jp-MarkdownCell").first
            opening.locator(".myst, .jp-RenderedMarkdown").first.wait_for()
            rendered = opening.locator(".myst")
            assert rendered.count() == 1, f"not rendered by jupyterlab-myst: {opening.inner_text()}"
            text = rendered.inner_text()
            assert keys and all(key in text for key in keys), text
            assert "{cite}" not in text, text

            rendered.click()  # the notebook has the focus, as after a participant's click

            def is_save(response) -> bool:  # jupytext's contents manager writes the .py
                url = response.url.split("?")[0]
                return response.request.method == "PUT" and url.endswith(save_url)

            save_url = f"/api/contents/notebooks/{source.name}"
            paired_file = repo / "_build" / "notebooks" / f"{source.stem}.ipynb"
            # Under load the kernel's info (language_info) can reach the page after its idle
            # indicator; a save without it proves less, so save again until one carries it.
            # Every save must leave the checkout clean, the first one included.
            for _ in range(15):
                with page.expect_response(is_save) as saved:
                    page.keyboard.press("Control+s")  # a real key press, JupyterLab's binding
                assert saved.value.ok
                assert _status(git) == "", f"a Ctrl+S dirtied the checkout:\n{_status(git)}"
                paired = json.loads(paired_file.read_text())
                if paired["metadata"].get("language_info", {}).get("name"):
                    break
                page.wait_for_timeout(1000)
        finally:
            browser.close()

    assert paired["metadata"]["language_info"]["name"] == "python"  # saved with the kernel on
    status = _status(git)
    diff = subprocess.run([*git, "diff"], capture_output=True, text=True).stdout
    assert status == "", f"one Ctrl+S dirtied the checkout:\n{status}{diff}"
    assert (repo / "notebooks" / source.name).read_bytes() == source.read_bytes()


def _status(git: list[str]) -> str:
    return subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
