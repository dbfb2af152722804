"""The demo end to end in headless Chromium (Debian's ``chromium`` and ``chromium-driver``), driven by Selenium.

Run with ``pytest -m browser``; ``.ci/run`` installs Chromium and runs it. The app is served on loopback in this
process; the test erases a concept on ``tiny-sd``, checks the patch download, generates a before/after pair and
saves a screenshot (under pytest's tmp path, and to ``$ERASEKIT_SCREENSHOT`` when that is set).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from erasekit import load_patch

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("ERASEKIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ERASEKIT_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1300",
)
TIMEOUT = 180  # seconds for any one step; a 2-core CI machine with other jobs running is slow


def _require(path: str, package: str) -> None:
    if Path(path).is_file():
        return
    message = f"{path} is missing: apt-get install -y {package} (`.ci/run` does this)."
    if os.environ.get("ERASEKIT_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tiny_pipe, tmp_path):
    """The demo served on 127.0.0.1 with tiny-sd as its model; closed after the test."""
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
    from erasekit.demo import DemoServer, ModelCatalog, ModelChoice
    from erasekit.demo.app import serve
    from erasekit.models import load_model

    catalog = ModelCatalog([ModelChoice("tiny-sd", "tiny-sd", "diffusion", lambda: load_model(tiny_pipe))])
    server = DemoServer(catalog, root=tmp_path / "server")
    port = _free_port()
    demo = serve(server, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        server.close()


@pytest.fixture
def browser(tmp_path):
    _require(CHROMIUM, "chromium")
    _require(CHROMEDRIVER, "chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[demo]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # Gradio re-renders lists (the dropdown's options while it filters): an element found a moment ago can go
    # stale before it is read; the condition is then simply evaluated again on the next poll
    wait = WebDriverWait(driver, TIMEOUT, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,))
    try:
        return wait.until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"Timed out waiting for {what}.") from None


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _text(driver, elem_id: str) -> str:
    found = _css(driver, f"#{elem_id}")
    return found[0].text if found else ""


def _type(driver, selector: str, text: str) -> None:
    """Replace the text of an input or textarea and leave it, so gradio sees the change."""
    from selenium.webdriver.common.keys import Keys

    field = _wait(driver, lambda d: _css(d, selector), selector)[0]
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(text)
    field.send_keys(Keys.TAB)


def _click(driver, selector: str) -> None:
    element = _wait(driver, lambda d: [e for e in _css(d, selector) if e.is_displayed()], selector)[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def _tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    buttons = _wait(
        driver, lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == name], name
    )
    buttons[0].click()


def _choose(driver, label: str, value: str) -> None:
    """Pick ``value`` in the dropdown whose accessible label is ``label``."""
    from selenium.webdriver.common.keys import Keys

    box = _wait(driver, lambda d: _css(d, f"input[aria-label='{label}']"), f"the {label} dropdown")[0]
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value)
    option = _wait(
        driver,
        lambda d: [o for o in _css(d, "[role=option]") if o.get_attribute("aria-label") == value],
        f"option {value}",
    )[0]
    option.click()
    _wait(driver, lambda d: box.get_attribute("value") == value, f"{label} = {value}")


def _link(driver, elem_id: str, filename: str) -> str:
    """The href of the download link for ``filename`` inside component ``elem_id``."""
    links = _wait(
        driver,
        lambda d: [a for a in _css(d, f"#{elem_id} a") if (a.get_attribute("href") or "").endswith("/" + filename)],
        f"the download link of {filename}",
    )
    return links[0].get_attribute("href")


def _images(driver, elem_id: str) -> list:
    return [img for img in _css(driver, f"#{elem_id} img") if img.get_attribute("src")]


def test_erase_then_compare_in_a_browser(app_url, browser, tmp_path):
    browser.get(app_url)
    _wait(browser, lambda d: "tiny-sd" in _text(d, "model-status"), "the model to load")

    # A failing job shows its error in the page, and the app stays usable afterwards.
    _wait(browser, lambda d: _css(d, "input[aria-label='Method']")[0].get_attribute("value"), "the method list")
    _click(browser, "#erase-button")
    _wait(browser, lambda d: "The concept is empty" in _text(d, "erase-status"), "the empty-concept error")

    _choose(browser, "Method", "esd")
    _type(browser, "#concept textarea", "a cat")
    _type(browser, "#steps input[type=number]", "2")
    _type(browser, "#lr input", "0.01")
    _click(browser, "#options-accordion button, #options-accordion")
    _type(browser, "#options textarea", "ddim_steps=3")
    _click(browser, "#erase-button")
    _wait(browser, lambda d: "esd-a-cat" in _text(d, "erase-status"), "the erasure to finish")
    assert "Error" not in _text(browser, "erase-status")
    patch_url = _link(browser, "patch-file", "esd-a-cat.safetensors")
    lora_url = _link(browser, "lora-file", "esd-a-cat_lora.safetensors")
    assert patch_url.startswith(app_url) and lora_url.startswith(app_url)
    downloaded = tmp_path / "downloaded.safetensors"
    with urllib.request.urlopen(patch_url, timeout=TIMEOUT) as response:  # the link serves the real patch file
        downloaded.write_bytes(response.read())
    patch = load_patch(downloaded)
    assert patch.metadata["method"] == "esd" and patch.metadata["concept"] == "a cat" and len(patch) > 0
    assert patch.metadata["config"]["steps"] == 2 and patch.metadata["config"]["lr"] == 0.01

    _tab(browser, "Compare")
    _wait(browser, lambda d: "esd-a-cat" in _text(d, "compare-patches"), "the new patch in the Compare tab")
    _type(browser, "#compare-steps input[type=number]", "4")
    _click(browser, "#compare-button")
    _wait(browser, lambda d: len(_images(d, "before-gallery")) >= 2, "the before images")
    _wait(browser, lambda d: len(_images(d, "after-gallery")) >= 2, "the after images")
    assert "mean absolute pixel change" in _text(browser, "compare-status")
    assert "seed 0" in _text(browser, "before-gallery") and "seed 1" in _text(browser, "after-gallery")

    time.sleep(1)  # let the galleries finish laying out before the picture
    shot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("ERASEKIT_SCREENSHOT"):
        target = Path(os.environ["ERASEKIT_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
