"""The browser fixture itself: it must see console errors, outside requests and blank pages."""

from __future__ import annotations

from pathlib import Path

from tests.browser import distinct_colours, nonblank_fraction, ready

CLEAN = """<!doctype html><html><body style="margin:0;background:#fff">
<canvas id="c" width="400" height="300"></canvas>
<script>
const ctx = document.getElementById('c').getContext('2d');
ctx.fillStyle = '#1f77b4'; ctx.fillRect(20, 20, 150, 100);
ctx.fillStyle = '#d62728'; ctx.fillRect(200, 120, 150, 100);
console.log('drawn');
</script></body></html>"""

BROKEN = """<!doctype html><html><body>
<img src="http://hidden-spaces.invalid/pixel.png">
<script>console.error('explicit error'); undefinedFunction();</script>
</body></html>"""


def test_clean_page_has_no_errors_no_requests_and_is_drawn(browser, tmp_path: Path) -> None:
    page = tmp_path / "clean.html"
    page.write_text(CLEAN)
    browser.open(page)
    assert browser.console_errors() == []
    assert browser.external_requests() == []
    assert browser.requests() == [page.resolve().as_uri()]
    assert any("drawn" in entry["message"] for entry in browser.console())
    png = browser.screenshot("fixture_clean")
    assert 0.01 < nonblank_fraction(png) < 0.2
    assert distinct_colours(png) >= 3


def test_broken_page_shows_errors_and_outside_requests(browser, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(BROKEN)
    browser.open(page)
    errors = browser.console_errors_with("explicit error", "undefinedFunction")
    assert any("explicit error" in e for e in errors), errors
    assert any("undefinedFunction" in e for e in errors), errors
    assert browser.external_requests() == ["http://hidden-spaces.invalid/pixel.png"]


def test_blank_page_is_blank(browser, tmp_path: Path) -> None:
    page = tmp_path / "blank.html"
    page.write_text("<!doctype html><html><body style='background:#fff'></body></html>")
    browser.open(page)
    assert nonblank_fraction(browser.screenshot("fixture_blank")) == 0.0
    assert browser.requests() == [page.resolve().as_uri()]


def test_a_browser_that_no_longer_answers_is_replaced(browser, tmp_path: Path) -> None:
    page = tmp_path / "clean.html"
    page.write_text(CLEAN)
    browser.open(page)
    old_profile = browser.profile
    browser.driver.quit()                           # the driver is gone: every command now fails
    assert ready(browser) is browser
    assert browser.profile != old_profile and not old_profile.exists()
    assert browser.run("return document.URL") == "about:blank"
    browser.open(page)
    assert browser.console_errors() == []
    assert browser.requests() == [page.resolve().as_uri()]


def test_no_browser_gives_a_reason(monkeypatch, tmp_path: Path) -> None:
    from tests.browser import find_chromium

    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.delenv("CHROMEDRIVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "no Chromium found" in find_chromium()
    (tmp_path / "chromium").write_text("#!/bin/sh\n")
    (tmp_path / "chromium").chmod(0o755)
    assert "no chromedriver found" in find_chromium()
