"""The reader kit in a real headless browser (Debian's Chromium driven by Playwright).

`make test` installs Chromium first (`make browser`); never `playwright install`, which
downloads browsers and fails offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from study_run import write_tiny_run

from xr2ct_lib.cli import main
from xr2ct_lib.study import score
from xr2ct_lib.study.kit import key_path_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium: `make browser`"
)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("kit")
    run = write_tiny_run(root / "run")
    out = root / "KIT"
    assert main(["reader-kit", "--run-dir", str(run), "--out", str(out), "--seed", "5",
                 "--cases-per-class", "3", "--volumes-per-kind", "2"]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, kit):
    """A fresh profile (empty localStorage) on the kit's index.html, recording requests."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.network = []  # every request that would leave the machine
    page.errors = []
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:"))
            else page.network.append(r.url))  # fmt: skip
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: d.accept())
    page.goto((kit / "index.html").as_uri())
    yield page
    context.close()


def _slice(page, plane):
    return int(page.locator(f".slice-label[data-plane={plane}]").inner_text().split("/")[0])


def _corner(page, plane):
    """Grey value of the displayed slice's top-left pixel."""
    return page.evaluate(
        f"document.querySelector('canvas[data-plane={plane}]').getContext('2d')"
        ".getImageData(0, 0, 1, 1).data[0]"
    )


def _set_slider(page, plane, value):
    page.locator(f"input[type=range][data-plane={plane}]").fill(str(value))


def test_a_participant_session_from_disk(page, kit, tmp_path):
    key = score.read_key(key_path_for(kit))
    truth = dict(zip(zip(key.task, key.code, strict=True), key.truth, strict=True))
    tasks = json.loads((kit / "kit.json").read_text())["tasks"]

    page.fill("#reader-name", "Dr Test, MD")  # a comma, to exercise CSV quoting
    page.click("#start")

    # Part A: the viewer decodes the volume and scrolls with the slider and the wheel
    page.wait_for_selector(".viewer[data-ready='1']")
    before = _slice(page, "axial"), page.eval_on_selector("canvas[data-plane=axial]",
                                                          "c => c.toDataURL()")  # fmt: skip
    _set_slider(page, "axial", 2)
    assert _slice(page, "axial") == 2
    assert page.eval_on_selector("canvas[data-plane=axial]", "c => c.toDataURL()") != before[1]
    page.hover("canvas[data-plane=coronal]")
    start = _slice(page, "coronal")
    page.mouse.wheel(0, 120)
    page.wait_for_function(f"document.querySelector('.slice-label[data-plane=coronal]')"
                           f".textContent.split('/')[0].trim() != '{start}'")  # fmt: skip
    assert _slice(page, "coronal") == start + 1
    for _ in range(2):  # a trackpad's small deltas add up to one slice
        page.mouse.wheel(0, 30)
    page.wait_for_function(f"document.querySelector('.slice-label[data-plane=coronal]')"
                           f".textContent.split('/')[0].trim() == '{start + 2}'")  # fmt: skip
    # arrow keys: a focused slider keeps them; otherwise they scroll the plane under the mouse
    page.keyboard.press("ArrowRight")
    assert _slice(page, "axial") == 3 and page.inner_text("#case-code") == tasks["realism"][0]
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("ArrowUp")
    assert _slice(page, "coronal") == start + 1

    # orientation: the marker sits superior-anterior-right; slice 1 of each plane is the
    # top / front / patient's right, and every plane draws it in its top-left corner
    for plane in ("axial", "coronal", "sagittal"):
        _set_slider(page, plane, 1)
    for plane in ("axial", "coronal", "sagittal"):
        assert _corner(page, plane) == 255, plane
    _set_slider(page, "axial", 6)
    assert _corner(page, "axial") < 128

    # window presets change the grey levels, not the slice
    shown = page.eval_on_selector("canvas[data-plane=axial]", "c => c.toDataURL()")
    page.select_option(".viewer select", "2")  # mediastinum
    assert page.eval_on_selector("canvas[data-plane=axial]", "c => c.toDataURL()") != shown
    assert _slice(page, "axial") == 6
    page.select_option(".viewer select", "0")
    assert page.eval_on_selector("canvas[data-plane=axial]", "c => c.toDataURL()") == shown

    for i, code in enumerate(tasks["realism"]):
        assert page.inner_text("#case-code") == code
        page.keyboard.press("g" if i % 2 else "r")
        page.click("[data-rating=anatomy][data-value='4']")
        page.click("[data-rating=consistency][data-value='2']")
        if i < len(tasks["realism"]) - 1:
            page.keyboard.press("ArrowRight")
    page.click("#finish")

    # Part B: phase 1, X-ray only; answer "no PE" throughout, then lock it
    assert page.locator(".viewer").count() == 0 and page.locator(".xray img").count() == 1
    for i, code in enumerate(tasks["pe_cxr"]):
        assert page.inner_text("#case-code") == code
        page.keyboard.press("n")
        if i < len(tasks["pe_cxr"]) - 1:
            page.keyboard.press("ArrowRight")
    page.click("#finish")

    # Part C: phase 2, X-ray + generated CTPA; answer from the key (a perfect reader)
    page.wait_for_selector(".viewer[data-ready='1']")
    for i, code in enumerate(tasks["pe_ctpa"]):
        assert page.inner_text("#case-code") == code
        page.keyboard.press("p" if truth[("pe_ctpa", code)] == "pe" else "n")
        if i < len(tasks["pe_ctpa"]) - 1:
            page.keyboard.press("ArrowRight")
    page.click("#finish")

    # phase 1 is locked: its answers cannot change any more
    page.click("[data-part=pe_cxr]")
    assert page.locator("[data-answer=pe]").is_disabled()

    # a reload keeps everything (localStorage)
    page.reload()
    assert "A 4/4 ✓" in page.inner_text("#bar-parts")
    assert "C 6/6 ✓" in page.inner_text("#bar-parts")

    with page.expect_download() as dl:
        page.click("#download")
    csv = tmp_path / dl.value.suggested_filename
    dl.value.save_as(csv)
    assert csv.name.endswith(".csv") and csv.name.startswith("responses-Dr_Test_MD")

    assert page.network == [] and page.errors == []
    assert not any("key" in p.name for p in kit.rglob("*"))

    # the download is what reader-score reads
    df = pd.read_csv(csv, dtype=str)
    assert set(df.reader) == {"Dr Test, MD"} and len(df) == len(key)
    assert main(["reader-score", str(kit), str(csv), "--out", str(tmp_path / "t")]) == 0
    s = score.score_files(kit, [csv])
    ph1 = s.pe.loc[("Dr Test, MD", score.PHASES["pe_cxr"])]
    ph2 = s.pe.loc[("Dr Test, MD", score.PHASES["pe_ctpa"])]
    assert (ph1.sensitivity, ph1.specificity, ph2.accuracy) == (0.0, 1.0, 1.0)
    assert s.comparison.loc["Dr Test, MD", "right only in phase 2"] == 3
    r = s.realism.loc["Dr Test, MD"]
    assert r.volumes == 4 and r["anatomy, generated"] == 4 and r["consistency, real"] == 2
    assert df.seconds.astype(float).ge(0).all()


def test_kit_opens_from_a_copied_folder_without_its_key(kit, tmp_path, page):
    """What a participant receives: the folder alone, anywhere on disk."""
    copy = tmp_path / "handed-out"
    shutil.copytree(kit, copy)
    page.goto((copy / "index.html").as_uri())
    page.fill("#reader-name", "B")
    page.click("#start")
    page.wait_for_selector(".viewer[data-ready='1']")
    assert page.network == [] and page.errors == []


def test_embedded_volume_viewers_work_in_a_static_page_without_a_kernel(browser, tmp_path):
    """Chapter 5's viewers as the built book has them: two fragments on one page (the
    viewer script defined once), every plane drawn, the window shared, nothing fetched."""
    import numpy as np

    from xr2ct_lib.study.embed import volume_viewers

    z = np.linspace(-1, 1, 12 * 20 * 16).reshape(12, 20, 16)
    parts = [volume_viewers({"ground truth": z, "generated": -z}, f"caption {i}", "profile: x")
             for i in range(2)]  # fmt: skip
    page_file = tmp_path / "page.html"
    page_file.write_text("<html><body><main>" + "".join(p._repr_html_() for p in parts)
                         + "</main></body></html>")  # fmt: skip
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, network = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:"))
            else network.append(r.url))  # fmt: skip
    page.goto(page_file.as_uri())
    page.wait_for_function("document.querySelectorAll('.viewer[data-ready]').length === 4")
    assert errors == [] and network == []
    assert page.locator(".xr2ct-volviewer canvas").count() == 12
    # the axial plane of the first volume is drawn (not left black), and sized to the volume
    drawn = page.evaluate("""() => { const c = document.querySelector('.xr2ct-volviewer canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return [c.width, c.height, Math.max(...d.filter((_, i) => i % 4 === 0))]; }""")
    assert drawn[:2] == [16, 20] and drawn[2] > 0
    # one window for both volumes of a fragment
    first = page.locator(".xr2ct-volviewer").first
    first.locator("select").first.select_option("0")
    assert first.locator("select").nth(1).input_value() == "0"
    # the book's own styles are left alone: the scoped rules never reach outside
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") in (
        "rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")  # fmt: skip
    page.close()
