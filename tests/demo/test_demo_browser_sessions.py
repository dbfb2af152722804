"""Two browser windows on one demo server, in headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven
by Selenium: a long erasure in one window holds the queue while the other's waits; Stop ends the first, the second
then runs; each window lists only its own patches. Run with ``pytest -m browser``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("ERASEKIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ERASEKIT_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
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
TIMEOUT = 180  # seconds for any one step on a busy 2-core machine


@pytest.fixture
def app_url(tiny_pipe, tmp_path):
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
    from erasekit.demo import DemoServer, Limits, ModelCatalog, ModelChoice
    from erasekit.demo.app import serve
    from erasekit.models import load_model

    catalog = ModelCatalog([ModelChoice("tiny-sd", "tiny-sd", "diffusion", lambda: load_model(tiny_pipe))])
    server = DemoServer(catalog, Limits(concurrent_jobs=1), root=tmp_path / "server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = serve(server, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        server.close()


@pytest.fixture
def browser(tmp_path):
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).is_file():
            message = f"{path} is missing: apt-get install -y {package} (`.ci/run` does this)."
            pytest.fail(message) if os.environ.get("ERASEKIT_REQUIRE_BROWSER") else pytest.skip(message)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[demo]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


class Window:
    """One browser window of ``driver``; every action switches to it first."""

    def __init__(self, driver, handle: str):
        self.driver, self.handle = driver, handle

    def on(self):
        self.driver.switch_to.window(self.handle)
        return self.driver

    def wait(self, condition, what: str):
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(
            self.on(), TIMEOUT, poll_frequency=0.3, ignored_exceptions=(StaleElementReferenceException,)
        )
        try:
            return wait.until(lambda d: condition(d))
        except TimeoutException:
            raise AssertionError(f"Timed out waiting for {what}.") from None

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.on().find_elements(By.CSS_SELECTOR, selector)

    def text(self, elem_id: str) -> str:
        found = self.css(f"#{elem_id}")
        return found[0].text if found else ""

    def type(self, selector: str, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        field = self.wait(lambda d: self.css(selector), selector)[0]
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        field.send_keys(text)
        field.send_keys(Keys.TAB)

    def click(self, selector: str) -> None:
        element = self.wait(lambda d: [e for e in self.css(selector) if e.is_displayed()], selector)[0]
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()

    def erase(self, concept: str, steps: int) -> None:
        self.type("#concept textarea", concept)
        self.type("#steps input[type=number]", str(steps))
        self.type("#lr input", "0.01")
        self.click("#erase-button")

    def compare_choices(self) -> list[str]:
        from selenium.webdriver.common.by import By

        buttons = [b for b in self.css("button[role=tab]") if b.text == "Compare"]
        buttons[0].click()
        labels = self.wait(lambda d: self.css("#compare-patches label"), "the Compare tab's patches")
        names = sorted(label.text for label in labels)
        [b for b in self.on().find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Erase"][0].click()
        return names


def open_window(driver, url: str, first: bool = False) -> Window:
    if not first:
        driver.switch_to.new_window("window")
    window = Window(driver, driver.current_window_handle)
    window.on().get(url)
    window.wait(lambda d: "tiny-sd" in window.text("model-status"), "the model to load")
    window.wait(lambda d: window.css("input[aria-label='Method']")[0].get_attribute("value"), "the method list")
    window.click("#options-accordion button, #options-accordion")
    window.type("#options textarea", "ddim_steps=2")
    return window


def test_two_windows_queue_stop_and_keep_their_own_patches(app_url, browser):
    long, short = open_window(browser, app_url, first=True), open_window(browser, app_url)
    long.erase("a cat", 1000)
    long.wait(lambda d: "step" in long.text("erase-status") or "/1000" in long.on().page_source, "the long erasure")
    short.erase("a dog", 2)
    short.wait(lambda d: "queue" in short.on().page_source.lower(), "the second job to wait in the queue")
    assert "esd-a-dog" not in short.text("erase-status")
    long.click("#stop-button")
    long.wait(lambda d: "Stopped; nothing was kept" in long.text("erase-status"), "the stopped erasure's message")
    short.wait(lambda d: "esd-a-dog" in short.text("erase-status"), "the queued erasure to finish")
    long.erase("a cat", 2)  # the stopped window works as before
    long.wait(lambda d: "esd-a-cat" in long.text("erase-status"), "the second erasure to finish")
    assert "Error" not in long.text("erase-status") + short.text("erase-status")
    assert long.compare_choices() == ["esd-a-cat"]
    assert short.compare_choices() == ["esd-a-dog"]
