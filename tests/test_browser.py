"""The feedback page and the class report in a real browser: headless Chromium (Debian's `chromium` package).

Each page is copied with a small probe script placed first in its <head>: it
records every error event (a script error, an image that fails to decode)
and, once the page has loaded, writes what the browser made of each <img>
(loaded, natural width and height) into the DOM. Chromium's --dump-dom then
returns the DOM after load, probe included. Without Chromium these tests are
skipped with a plain reason; CI (.ci/run) installs it and sets
REQUIRE_BROWSER=1, which turns the skip into a failure. CHROMIUM=/path picks
another binary (a Chrome build, say).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SKIP_REASON = "chromium not installed: browser tests skipped"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--disable-extensions", "--mute-audio"]
PROBE = """<script id='probe-script'>
window.__errors = [];
window.addEventListener('error', function (ev) {
  var t = ev.target;
  window.__errors.push(t && t.tagName ? t.tagName + ' failed: ' + String(t.src || '').slice(0, 60) : String(ev.message));
}, true);
window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (im) {
    return {complete: im.complete, width: im.naturalWidth, height: im.naturalHeight, shown: im.getBoundingClientRect().width};
  });
  var p = document.createElement('pre');
  p.id = 'probe';
  p.textContent = JSON.stringify({errors: window.__errors, images: images});
  document.body.appendChild(p);
});
</script>"""


def chromium() -> str | None:
    """The Chromium binary (or $CHROMIUM, when set), or None when it is not installed."""
    if "CHROMIUM" in os.environ:
        path = os.environ["CHROMIUM"]
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def run_chromium(args: list[str], profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    binary = chromium()
    if binary is None:
        raise RuntimeError(SKIP_REASON)
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def render(page: Path, work: Path) -> tuple[str, dict]:
    """The DOM of `page` after load, and the probe's findings ({errors, images})."""
    text = page.read_text(encoding="utf-8")
    assert "<head>" in text
    probed = work / page.name
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    done = run_chromium(["--dump-dom", probed.as_uri()], work / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r"<pre id=\"probe\">(.*?)</pre>", done.stdout, re.S)
    assert match, f"the page did not finish loading: {done.stdout[-500:]} {done.stderr[-1000:]}"
    import html

    return done.stdout, json.loads(html.unescape(match.group(1)))


def screenshot(page: Path, png: Path, width: int = 1100, height: int = 1400, profile: Path | None = None) -> Path:
    """A PNG of the top of `page`, as headless Chromium draws it."""
    profile = profile or png.parent / ".chromium-profile"
    done = run_chromium([f"--screenshot={png}", f"--window-size={width},{height}", page.as_uri()], profile)
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
    return png


REQUIRED = os.environ.get("REQUIRE_BROWSER") == "1"
needs_browser = pytest.mark.skipif(chromium() is None and not REQUIRED, reason=SKIP_REASON)
"""Decided before any fixture runs, so that a machine without Chromium does not grade the demo class for nothing."""


@pytest.fixture(scope="session")
def browser():
    if chromium() is None:
        pytest.fail("REQUIRE_BROWSER=1 but chromium is not installed")
    return chromium()


def richest_feedback_page(out: Path) -> Path:
    """The feedback page with the most pictures."""
    return max(sorted((out / "feedback").glob("*.html")), key=lambda p: p.read_text().count("<img "))


def check_images(dom: str, probe: dict, source: str) -> int:
    """Every image loaded, decoded by the browser at the size its PNG header gives, and is shown; returns the count."""
    from test_report import IMG, png_size

    assert probe["errors"] == [], probe["errors"]
    uris = IMG.findall(source)
    assert len(probe["images"]) == len(uris) > 0
    for uri, seen in zip(uris, probe["images"]):
        assert seen["complete"] and seen["width"] > 0 and seen["height"] > 0, seen
        assert (seen["width"], seen["height"]) == png_size(uri)
        assert seen["shown"] > 100, seen
    return len(uris)


@needs_browser
def test_feedback_page_in_chromium(browser, graded_demo, tmp_path):
    """Does the richest feedback page load in Chromium without errors, with every picture decoded and shown,
    and with its scores, item sections and named mistakes in the DOM?"""
    from bs4 import BeautifulSoup

    _, out = graded_demo
    page = richest_feedback_page(out)
    source = page.read_text()
    dom, probe = render(page, tmp_path)
    assert check_images(dom, probe, source) >= 2
    soup = BeautifulSoup(dom, "html.parser")
    assert soup.select_one("section#scores table tr td a")
    assert soup.select("section.notebook") and soup.select("section.item")
    assert soup.select("div.mistake") or soup.select("div.advice")
    for figure in soup.select("figure.picture"):
        assert figure.find("img") and figure.find("figcaption").get_text(strip=True)


@needs_browser
def test_mistake_pictures_in_chromium(browser, graded_demo, tmp_path):
    """Does a student with the unscaled-scores mistake see, in the browser, a heat map of their attention weights?"""
    from bs4 import BeautifulSoup

    _, out = graded_demo
    page = out / "feedback" / "cleo_no_scaling.html"
    dom, probe = render(page, tmp_path)
    check_images(dom, probe, page.read_text())
    soup = BeautifulSoup(dom, "html.parser")
    figure = soup.select_one("section#item-scaled_dot_product_attention figure[data-output='weights']")
    assert figure is not None and figure.img["src"].startswith("data:image/png;base64,")
    assert "the scores are not scaled" in soup.select_one("section#item-scaled_dot_product_attention").get_text()


@needs_browser
def test_class_report_in_chromium(browser, graded_demo, tmp_path):
    """Does the class report load in Chromium without errors, every plot decoded, every section present?"""
    from bs4 import BeautifulSoup

    _, out = graded_demo
    page = out / "report.html"
    dom, probe = render(page, tmp_path)
    assert check_images(dom, probe, page.read_text()) >= 3
    soup = BeautifulSoup(dom, "html.parser")
    for section in ("totals", "distributions", "mistakes", "failing", "timing"):
        assert soup.select_one(f"section#{section} h2"), section
    links = [a["href"] for a in soup.select("section#mistakes a")]
    assert links and all((out / href).exists() for href in links)


@needs_browser
def test_screenshots_are_drawn(browser, graded_demo, tmp_path):
    """Does Chromium draw both pages as pictures with real content (not a blank or error page)?"""
    from PIL import Image

    _, out = graded_demo
    for page in (out / "report.html", richest_feedback_page(out)):
        png = screenshot(page, tmp_path / f"{page.stem}.png", 1000, 1200, tmp_path / "profile")
        with Image.open(png) as im:
            assert im.size == (1000, 1200)
            colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 200, page.name


def test_missing_chromium_is_reported_as_a_skip(tmp_path):
    """On a machine without Chromium, does the test run say plainly that it skipped the browser tests?"""
    import sys

    env = {k: v for k, v in os.environ.items() if k != "REQUIRE_BROWSER"}
    env["CHROMIUM"] = str(tmp_path / "no-chromium-here")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                           "-k", "not missing_chromium"], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).parent.parent, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:]
    assert re.search(r"SKIPPED \[\d+\] .*" + re.escape(SKIP_REASON), done.stdout), done.stdout[-2000:]
    env["REQUIRE_BROWSER"] = "1"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                           "-k", "class_report"], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).parent.parent, timeout=300, check=False)
    assert done.returncode != 0 and "REQUIRE_BROWSER=1 but chromium is not installed" in done.stdout
