"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium):
type a phrase, click Translate, read the translation and check that the attention heatmap is drawn."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from service.app import create_app
from service.config import ServiceConfig

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=900,1150"]


def browser_paths() -> tuple[str, str]:
    """Chromium and its driver; locally a missing browser skips the test, in CI (CI set) it fails."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver; .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def site(trained_model):
    """The app on a free localhost port (werkzeug's threaded server in a background thread)."""
    server = make_server("127.0.0.1", 0, create_app(ServiceConfig(model_path=trained_model.path)), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = browser_paths()
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


def submit(browser, site: str, text: str, direction: str, context: str = "") -> None:
    browser.get(site + "/")
    WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "model").text not in ("", "…"))
    browser.find_element(By.ID, "text").send_keys(text)
    if context:
        browser.find_element(By.ID, "context").send_keys(context)
    browser.find_element(By.CSS_SELECTOR, f"input[name=direction][value='{direction}']").click()
    browser.find_element(By.ID, "translate").click()


def shown_translation(browser) -> str:
    WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "result").is_displayed()
                                     or b.find_element(By.ID, "error").is_displayed())
    return browser.find_element(By.ID, "translation").text


# Counts heatmap cells' colours: painted cells are bluish (blue channel well above red).
COUNT_HEATMAP_PIXELS = """
const canvas = document.getElementById('heatmap');
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let bluish = 0, dark = 0;
for (let i = 0; i < pixels.length; i += 4) {
  if (pixels[i + 2] > 200 && pixels[i] < 230) bluish++;
  if (pixels[i] < 80 && pixels[i + 2] > 200) dark++;
}
return {rows: Number(canvas.dataset.rows), columns: Number(canvas.dataset.columns), bluish, dark,
        width: canvas.width, height: canvas.height};
"""


def test_translate_a_phrase_and_draw_the_attention_heatmap(browser, site, tmp_path):
    submit(browser, site, "good friend", "en-ko", context="she is a good friend")
    assert shown_translation(browser) == "좋은 친구"
    assert browser.find_element(By.ID, "direction-used").text == "en → ko"
    assert browser.find_elements(By.CSS_SELECTOR, "#alternatives li")  # alternatives, or "none"

    heatmap = browser.execute_script(COUNT_HEATMAP_PIXELS)
    assert heatmap["rows"] >= 2 and heatmap["columns"] >= 3  # target pieces + </s>, tag + pieces + </s>
    assert heatmap["bluish"] > 30 * heatmap["rows"]  # many painted cell pixels, not a blank canvas
    assert heatmap["dark"] > 0  # some cell got most of a row's attention

    screenshot = tmp_path / "web-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("WEB_PAGE_SCREENSHOT"):  # keep a copy to look at
        shutil.copy(screenshot, Path(os.environ["WEB_PAGE_SCREENSHOT"]))


def test_korean_to_english(browser, site):
    submit(browser, site, "고양이", "ko-en")
    assert shown_translation(browser) == "cat"


def test_detect_picks_the_direction(browser, site):
    submit(browser, site, "도서관", "auto")
    assert shown_translation(browser) == "library"
    assert browser.find_element(By.ID, "direction-used").text == "ko → en"


def test_an_error_is_shown_not_a_result(browser, site):
    submit(browser, site, "   ", "en-ko")
    shown_translation(browser)
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "whitespace" in error.text
    assert not browser.find_element(By.ID, "result").is_displayed()
