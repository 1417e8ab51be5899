"""report.html in a real headless Chromium: it renders offline, loads nothing, runs nothing
(even with its Content-Security-Policy removed), scenarios expand and collapse on a real
click without JavaScript, and printing expands every scenario.

Needs Debian's ``chromium``: without it the tests fail under CI (``CI`` set) and are skipped
elsewhere.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from governance_cdp import Browser
from governance_helpers import chromium_or_skip, hostile_report, write

from kfm_conformance.report.html import render_html

_FIRST_CLOSED = """(() => {
  const d = [...document.querySelectorAll('details.scenario')].find(e => !e.open);
  d.id = d.id || 'kfm-probe';
  d.setAttribute('data-probe', '1');
  const s = d.querySelector('summary');
  s.scrollIntoView({block: 'center'});
  const r = s.getBoundingClientRect();
  return [r.x + 8, r.y + r.height / 2];
})()"""
_PROBE_OPEN = "document.querySelector('[data-probe]').open"
_PROBE_BODY_VISIBLE = "document.querySelector('[data-probe] > .body').checkVisibility()"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pages")
    page = render_html(hostile_report())
    without_csp = "\n".join(
        line for line in page.splitlines() if "Content-Security-Policy" not in line
    )
    assert without_csp != page
    return {
        "page": write(root / "report.html", page),
        "without_csp": write(root / "report-no-csp.html", without_csp),
    }


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary = chromium_or_skip()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with Browser(binary, profile) as chromium:
        yield chromium


@pytest.mark.parametrize("variant", ["page", "without_csp"])
def test_hostile_report_renders_and_runs_nothing(
    browser: Browser, pages: dict[str, Path], variant: str
) -> None:
    url = pages[variant].as_uri()
    browser.open(url)
    assert browser.evaluate("document.readyState") == "complete"
    assert browser.evaluate("typeof window.__kfm_pwned") == "undefined"
    assert browser.evaluate("document.scripts.length") == 0
    active = "script, iframe, object, embed, img, svg, base, form, link, video, audio"
    assert browser.evaluate(f"document.querySelectorAll('{active}').length") == 0
    assert (
        browser.evaluate(
            "[...document.querySelectorAll('*')].flatMap(e => [...e.attributes])"
            ".filter(a => a.name.startsWith('on')).length"
        )
        == 0
    )
    assert "NOT CERTIFIED" in browser.evaluate("document.body.innerText")
    assert "<script>window.__kfm_pwned" in browser.evaluate("document.body.innerText")
    # Nothing but the page itself was requested: no fonts, scripts, images, no network.
    assert browser.requested_urls() == [url]
    assert browser.evaluate("performance.getEntriesByType('resource').length") == 0


def test_a_click_on_a_summary_expands_and_collapses_a_scenario(
    browser: Browser, pages: dict[str, Path]
) -> None:
    browser.open(pages["page"].as_uri())
    x, y = browser.evaluate(_FIRST_CLOSED)
    assert browser.evaluate(_PROBE_OPEN) is False
    assert browser.evaluate(_PROBE_BODY_VISIBLE) is False
    browser.click(x, y)
    assert browser.evaluate(_PROBE_OPEN) is True
    assert browser.evaluate(_PROBE_BODY_VISIBLE) is True
    browser.click(x, y)
    assert browser.evaluate(_PROBE_OPEN) is False
    # Failing scenarios open by themselves: the reviewer sees them first.
    assert browser.evaluate("document.querySelector('details.scenario.v-fail').open") is True


def test_printing_expands_every_scenario(browser: Browser, pages: dict[str, Path]) -> None:
    browser.open(pages["page"].as_uri())
    browser.evaluate(_FIRST_CLOSED)
    closed_bodies = (
        "[...document.querySelectorAll('details:not([open]) > .body')]"
        ".filter(e => e.checkVisibility()).length"
    )
    total_closed = browser.evaluate("document.querySelectorAll('details:not([open])').length")
    assert total_closed > 0
    assert browser.evaluate(closed_bodies) == 0
    browser.send("Emulation.setEmulatedMedia", {"media": "print"})
    assert browser.evaluate(closed_bodies) == total_closed
    assert (
        browser.evaluate("getComputedStyle(document.querySelector('.controls')).display") == "none"
    )


def test_screenshot_shows_the_report(
    browser: Browser, pages: dict[str, Path], tmp_path: Path
) -> None:
    browser.open(pages["page"].as_uri())
    shot = browser.screenshot(tmp_path / "report.png")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 600
    assert len(data) > 20_000  # a rendered page, not a blank one
