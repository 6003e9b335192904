"""A real headless Chromium for tests of HTML pages (selenium + Debian's chromium-driver).

Use the ``browser`` fixture (re-exported by tests/conftest.py)::

    def test_page(browser):
        browser.open(path_to_html)                 # file:// URL; waits for the load event
        assert browser.console_errors() == []      # console.error, uncaught exceptions, failed loads
        assert browser.external_requests() == []   # every request that is not file:, data: or blob:
        png = browser.screenshot("my_page")        # saved as a test artefact, path listed at the end
        assert nonblank_fraction(png) > 0.01

Chromium starts once per test session with a fresh ``--user-data-dir`` and the flags below (no
background networking, no component updates, no sync, no QUIC), so the only requests it makes are
the page's own. Console messages come from the ``browser`` log and requests from the DevTools
performance log (``Network.requestWillBeSent``), both drained per test.

Screenshots go to ``$HIDDEN_SPACES_ARTIFACTS`` (default ``test-artifacts/browser/`` in the
repository, git-ignored); the run prints their paths in its summary. Where no Chromium, no
chromedriver or no selenium is installed, the fixture skips with the reason (`.ci/run` installs
them: ``apt-get install chromium chromium-driver``, ``pip install -e '.[test]'``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.skips import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("HIDDEN_SPACES_ARTIFACTS", REPO / "test-artifacts" / "browser"))

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1600,1200",
)
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "devtools:")

# Screenshots written during this session, listed in the terminal summary (see conftest.py).
SAVED: list[Path] = []


def find_chromium() -> tuple[str, str] | str:
    """``(browser, chromedriver)`` paths, or the reason (a string) why there is no usable browser."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    browser = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSER_NAMES)), None)
    if not browser:
        return "no Chromium found (apt-get install chromium chromium-driver, or set CHROMIUM)"
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not driver:
        return "no chromedriver found (apt-get install chromium-driver, or set CHROMEDRIVER)"
    return browser, driver


class Browser:
    """One headless Chromium (selenium webdriver) with console and network logs."""

    def __init__(self, binary: str, driver_path: str):
        self._found = (binary, driver_path)
        self._start()

    def _start(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        binary, driver_path = self._found
        self.profile = Path(tempfile.mkdtemp(prefix="hs-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        options.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
        # An explicit driver path: selenium-manager (which downloads drivers) never runs.
        self.driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        self.driver.set_page_load_timeout(120)
        self.driver.set_script_timeout(60)
        self._requests: list[str] = []
        self._console: list[dict[str, Any]] = []

    # -- navigation -----------------------------------------------------------------------------

    def open(self, path: Path | str, settle: float = 0.0) -> None:
        """Load a file (by path) or URL and wait for the load event (+ ``settle`` seconds)."""
        url = Path(path).resolve().as_uri() if not str(path).startswith(("file:", "http:", "https:", "about:")) else str(path)
        self.driver.get(url)
        if settle:
            time.sleep(settle)

    def run(self, script: str, *args: Any) -> Any:
        """``execute_script``: the script's ``return`` value."""
        return self.driver.execute_script(script, *args)

    def wait_for(self, script: str, timeout: float = 30.0, interval: float = 0.1) -> Any:
        """Poll a JS expression (``return ...``) until it is truthy; its value, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for: {script}")
            time.sleep(interval)

    # -- logs -----------------------------------------------------------------------------------

    def _drain(self) -> None:
        self._console.extend(self.driver.get_log("browser"))
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self._requests.append(message["params"]["request"]["url"])

    def reset(self) -> None:
        """Blank page, logs emptied: the state each test starts from."""
        self.driver.get("about:blank")
        self._drain()
        self._console.clear()
        self._requests.clear()

    def console(self) -> list[dict[str, Any]]:
        """Every console entry since the test began (``level``, ``message``, ``source``)."""
        self._drain()
        return list(self._console)

    def console_errors(self) -> list[str]:
        """console.error calls, uncaught exceptions and failed loads (level SEVERE)."""
        return [entry["message"] for entry in self.console() if entry["level"] == "SEVERE"]

    def console_errors_with(self, *parts: str, timeout: float = 10.0) -> list[str]:
        """:meth:`console_errors` once each of ``parts`` is in one of them, or when ``timeout``
        seconds have passed. For pages that must log errors: Chromium hands console entries to
        the driver as events, and a clean-clone run once found none yet right after the load
        event of a page whose inline script had logged two."""
        deadline = time.monotonic() + timeout
        while True:
            errors = self.console_errors()
            if all(any(part in e for e in errors) for part in parts) or time.monotonic() > deadline:
                return errors
            time.sleep(0.2)

    def requests(self) -> list[str]:
        """Every URL the page requested since the test began, in order."""
        self._drain()
        return list(self._requests)

    def external_requests(self) -> list[str]:
        """Requests that would leave the machine (anything not file:, data:, blob:, about:)."""
        return [url for url in self.requests() if not url.startswith(LOCAL_SCHEMES)]

    # -- artefacts ------------------------------------------------------------------------------

    def screenshot(self, name: str, full_page: bool = True) -> bytes:
        """PNG of the page (the whole document where ``full_page``), saved under ARTIFACTS."""
        import base64

        from selenium.common.exceptions import WebDriverException

        for attempt in range(3):
            self.wait_for("return document.readyState === 'complete'")
            try:
                shot = self.driver.execute_cdp_cmd("Page.captureScreenshot",
                                                   {"format": "png", "captureBeyondViewport": full_page})
                break
            except WebDriverException as exc:
                # A fresh Chromium on a fresh machine once swapped the page's target right after
                # the load event ("timeout from aborted by navigation: Not attached to an active
                # page"), failing the session's first capture; the page itself was fine. Again, on
                # the page as it now is; any other fault is raised at once.
                if attempt == 2 or "navigation" not in str(exc):
                    raise
                time.sleep(1.0)
        png = base64.b64decode(shot["data"])
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(png)
        SAVED.append(path)
        return png

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def restart(self) -> None:
        """A new Chromium in place of this one (whose driver no longer answers)."""
        with contextlib.suppress(Exception):
            self.quit()
        self._start()


def _packed_rgb(png: bytes):
    """Pixels of a PNG as one int per pixel (0xRRGGBB)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(np.int32)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def nonblank_fraction(png: bytes, background: tuple[int, int, int] | None = None, tol: int = 12) -> float:
    """Fraction of pixels that differ from the background (default: the most common colour)."""
    import numpy as np

    packed = _packed_rgb(png)
    if background is None:
        bg = int(np.bincount(packed, minlength=1 << 24).argmax())
        background = (bg >> 16, (bg >> 8) & 255, bg & 255)
    rgb = np.stack([packed >> 16, (packed >> 8) & 255, packed & 255], axis=1)
    diff = np.abs(rgb - np.asarray(background, dtype=np.int32)).max(axis=1)
    return float((diff > tol).mean())


def distinct_colours(png: bytes, min_pixels: int = 20) -> int:
    """How many colours cover at least ``min_pixels`` pixels (a one-colour canvas gives 1 or 2)."""
    import numpy as np

    counts = np.bincount(_packed_rgb(png), minlength=1 << 24)
    return int((counts >= min_pixels).sum())


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the session (skips with the reason where none is installed)."""
    found = find_chromium()
    if isinstance(found, str):
        skip_or_fail(f"no browser for HTML tests: {found}")
    browser = Browser(*found)
    try:
        yield browser
    finally:
        browser.quit()


def ready(browser: Browser) -> Browser:
    """``browser`` reset (:meth:`Browser.reset`); a new Chromium in its place if this one no longer
    answers (seen once in a whole run: the reset before a test failed), so one broken browser does
    not fail every test after it. Any fault counts (a crashed tab raises selenium's
    WebDriverException, a driver that exited a connection error); a new browser that fails too
    raises."""
    try:
        browser.reset()
    except Exception:
        browser.restart()
        browser.reset()
    return browser


@pytest.fixture
def browser(chromium: Browser) -> Iterator[Browser]:
    """The session's Chromium on a blank page with empty console and network logs; left on a blank
    page again after the test, since a page left open keeps drawing (a WebGL canvas redrawn by
    software, a page polling a stopped server): seen using 0.8 of a core for the rest of a run.
    A Chromium that no longer answers is replaced (:func:`ready`)."""
    yield ready(chromium)
    with contextlib.suppress(Exception):        # a browser that broke is replaced at the next reset
        chromium.driver.get("about:blank")
