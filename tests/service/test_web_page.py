"""The web page at ``GET /`` in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium).

Set ``AIDETECT_SCREENSHOT=1`` to save the page after a check to ``docs/img/web-page.png`` (the README shows it).
The server runs the shipped model when the checkout has it, so the screenshot shows a real verdict.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aidetect_infer import Detector

from .client import REPO, Server, request

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT = REPO / "docs" / "img" / "web-page.png"
KEY = "page-test-key"
SAMPLE = (
    "The results demonstrate that the proposed framework consistently outperforms existing baselines across all "
    "evaluated benchmarks. Furthermore, our analysis reveals that the improvements are robust to variations in "
    "hyperparameters and dataset size. These findings highlight the potential of the approach for real-world "
    "applications.\n\n"
    "We drove up to Grandma's on Sunday. Dad got lost twice because he refuses to use the GPS, and my brother "
    "threw up in a Burger King parking lot. Grandma made her terrible tuna casserole and we all ate it anyway. On "
    "the way back the car made a noise like a goose.\n\n"
    "In conclusion, it is important to note that effective communication plays a crucial role in fostering "
    "collaboration, enhancing productivity, and ensuring the overall success of any organization. By prioritizing "
    "transparency and active listening, teams can navigate challenges and achieve their shared goals."
)
HOSTILE = '<img src=x onerror="window.__pwned=1"> and <script>window.__pwned=1</script> & "quotes" end.'

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Path:
    from aidetect_infer.detector import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "model.onnx").is_file() else tiny_bundle


@pytest.fixture(scope="module")
def server(serve_deps, bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(bundle, ["--api-key", KEY], tmp_path_factory.mktemp("page") / "server.log")
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def reference(bundle: Path) -> Detector:
    return Detector.from_pretrained(bundle, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,1400",
    ):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def check(browser: Any, port: int, text: str, key: str | None = KEY) -> None:
    """Open the page, enter the key and the text (set as the textarea's value, as a paste does), press Check."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://127.0.0.1:{port}/")
    key_field = browser.find_element(By.ID, "api-key")
    key_field.clear()
    if key is not None:
        key_field.send_keys(key)
    browser.execute_script("document.getElementById('text').value = arguments[0];", text)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 60).until(
        lambda b: b.find_element(By.ID, "result").is_displayed() or b.find_element(By.ID, "error").is_displayed()
    )


def test_paste_check_and_read_the_verdict(browser, server, reference):
    from selenium.webdriver.common.by import By

    check(browser, server.port, SAMPLE)
    assert not browser.find_element(By.ID, "error").is_displayed()
    expected = reference.explain(SAMPLE)
    assert browser.find_element(By.ID, "verdict").text == expected.label
    assert f"{expected.score:.3f}" in browser.find_element(By.ID, "score").text
    assert f"{reference.threshold:.3f}" in browser.find_element(By.ID, "meaning").text
    segments = browser.find_elements(By.CSS_SELECTOR, "#segments .segment")
    assert len(segments) == len(expected.segments) > 1
    assert [s.get_attribute("data-score") for s in segments] == [f"{s.score:.3f}" for s in expected.segments]
    shown = browser.execute_script("return document.getElementById('segments').textContent;")
    assert shown == SAMPLE
    if os.environ.get("AIDETECT_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))


def test_pasted_markup_is_shown_as_text_and_never_runs(browser, server):
    from selenium.webdriver.common.by import By

    check(browser, server.port, HOSTILE)
    assert browser.find_element(By.ID, "result").is_displayed()
    assert browser.execute_script("return window.__pwned;") is None
    assert browser.execute_script("return document.getElementById('segments').textContent;") == HOSTILE
    assert not browser.find_elements(By.CSS_SELECTOR, "#segments img, #segments script")


def test_without_the_key_the_page_says_so(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{server.port}/")
    browser.execute_script("sessionStorage.clear();")
    check(browser, server.port, SAMPLE, key=None)
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "API key" in error.text
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_the_key_is_kept_for_the_tab(browser, server):
    from selenium.webdriver.common.by import By

    check(browser, server.port, "A short text to check.")
    browser.refresh()
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == KEY
    assert browser.execute_script("return sessionStorage.getItem('aidetect-api-key');") == KEY
    assert request(server.port, "GET", "/").status == 200  # the page itself needs no key
