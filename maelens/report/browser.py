"""Open a report in a real browser (headless Chromium) and check it as a reader would.

Used by the test suite and by `maelens report --screenshot`: every image must decode, and no
request may leave the file (the report is self-contained). Needs Chromium from the system's
packages (`apt-get install chromium`) and the `playwright` Python package, which drives it
without downloading a browser of its own.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from maelens.errors import MaelensError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# The flags the machines here need: no sandbox as root, no background traffic.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class BrowserCheck:
    images: int
    decoded: int
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    title: str = ""

    @property
    def outside_requests(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("data:", "file:", "about:"))]


def find_chromium() -> str | None:
    """The system Chromium executable, or None."""
    override = os.environ.get("MAELENS_CHROMIUM")
    if override:
        return override if Path(override).is_file() else None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def check_report(report: str | os.PathLike, screenshot: str | os.PathLike | None = None,
                 width: int = 1200) -> BrowserCheck:
    """Load `report` in headless Chromium; count decoded images, record every request, and
    optionally save a full-page PNG screenshot."""
    executable = find_chromium()
    if executable is None:
        raise MaelensError("no Chromium found; install it (apt-get install chromium) or set "
                           "MAELENS_CHROMIUM to its path.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise MaelensError("checking a report needs the `playwright` package "
                           "(pip install playwright; no browser download is needed).") from None
    url = Path(report).resolve().as_uri()
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url, wait_until="load")
            counts = page.evaluate("""() => { const imgs = [...document.images];
                return [imgs.length, imgs.filter(i => i.complete && i.naturalWidth > 0).length]
            }""")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=False)
            title = page.title()
        finally:
            browser.close()
    return BrowserCheck(images=counts[0], decoded=counts[1], requests=requests, title=title)
