"""Headless Chromium driven by Playwright, on loopback only, and the log of what a page sent.

Debian's ``chromium`` (``scripts/bootstrap`` installs it), never a browser
Playwright downloads: ``launch`` is given its path. Every host name but
127.0.0.1 fails to resolve, so a page fetches nothing from outside. The one
thing the Rucio panel asks the outside for, Google's Material Icons font
(its icons are ligatures of that font), is served from Debian's copy of it
(``fonts-material-design-icons-iconfont``) when installed; without it the
icons show as their names, which changes nothing but the screenshots.

    with sync_playwright() as playwright:
        browser = chromium(playwright)        # raises ChromiumUnavailable
        context = browser.new_context()
        log = NetworkLog(context, server.url(""), "rucio-jupyterlab/")
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Request, Response
from playwright.sync_api import Error as PlaywrightError

# nginx's "client closed the request", as rucio_metrics counts a request the browser gave up on.
ABORTED = 499

LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
ICON_FONT = Path("/usr/share/fonts/woff/material-design-icons-iconfont/MaterialIcons-Regular.woff2")
# What Google's stylesheet for the font says, with the font file at a URL served below.
ICON_FONT_URL = "https://fonts.gstatic.com/s/materialicons/MaterialIcons-Regular.woff2"
ICON_STYLESHEET = f"""\
@font-face {{ font-family: 'Material Icons'; font-style: normal; font-weight: 400;
  src: url({ICON_FONT_URL}) format('woff2'); }}
.material-icons {{ font-family: 'Material Icons'; font-weight: normal; font-style: normal; font-size: 24px;
  line-height: 1; letter-spacing: normal; text-transform: none; display: inline-block; white-space: nowrap;
  word-wrap: normal; direction: ltr; -webkit-font-feature-settings: 'liga'; -webkit-font-smoothing: antialiased; }}
"""


class ChromiumUnavailable(Exception):
    """No Chromium here, or it did not start."""


def chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless, resolving no host name but 127.0.0.1."""
    path = shutil.which("chromium")
    if path is None:
        raise ChromiumUnavailable("no `chromium` on PATH (scripts/bootstrap installs Debian's package)")
    try:
        return playwright.chromium.launch(executable_path=path, headless=True, args=[LOOPBACK_ONLY])
    except PlaywrightError as e:
        raise ChromiumUnavailable(f"{path} did not start: {e.message.splitlines()[0]}") from e


def serve_icon_font(context: BrowserContext) -> None:
    """Answer the Material Icons requests of every page in ``context`` from Debian's font, if installed."""
    if not ICON_FONT.is_file():
        return
    font = ICON_FONT.read_bytes()
    context.route("https://fonts.googleapis.com/icon?*",
                  lambda route: route.fulfill(content_type="text/css", body=ICON_STYLESHEET))
    context.route(ICON_FONT_URL, lambda route: route.fulfill(content_type="font/woff2", body=font))


class NetworkLog:
    """Every request the pages of a browser context sent under ``under`` of a server's ``base_url``, and how
    each ended.

    An answer's status is what the browser got (a redirect's own ``3xx``: the
    browser follows it with another request); a request that failed without
    an answer (the page reloaded while it waited, say) ends as ``ABORTED``.
    Playwright delivers events while the test calls it: ``settle`` waits
    until none is under way.
    """

    def __init__(self, context: BrowserContext, base_url: str, under: str) -> None:
        self.prefix = base_url + under
        self._base_path = urlsplit(base_url).path
        self.sent: list[Request] = []
        self.status: dict[Request, int] = {}
        context.on("request", self._sent)
        context.on("response", self._answered)
        context.on("requestfailed", self._failed)

    def _sent(self, request: Request) -> None:
        if request.url.startswith(self.prefix):
            self.sent.append(request)

    def _answered(self, response: Response) -> None:
        if response.url.startswith(self.prefix):
            self.status[response.request] = response.status

    def _failed(self, request: Request) -> None:
        if request.url.startswith(self.prefix):
            self.status.setdefault(request, ABORTED)  # an answer whose body then failed keeps its status

    def route(self, request: Request) -> str:
        """A request's path after the server's base URL, as rucio_metrics labels its route."""
        return "/" + urlsplit(request.url).path[len(self._base_path):]

    @property
    def pending(self) -> list[Request]:
        return [r for r in self.sent if r not in self.status]

    def settle(self, page: Page, seconds: float = 30) -> None:
        """Until every request sent so far has ended (events are delivered while this waits)."""
        for _ in range(int(seconds * 10)):
            if not self.pending:
                return
            page.wait_for_timeout(100)
        raise AssertionError(f"requests still under way after {seconds:g} s: {[r.url for r in self.pending]}")

    def counts(self) -> Counter[tuple[str, str, str]]:
        """``(route, method, status)`` of every request that ended, counted."""
        return Counter((self.route(r), r.method, str(self.status[r])) for r in self.sent if r in self.status)

    def __repr__(self) -> str:
        return "\n".join(f"{r.method} {r.url} -> {self.status.get(r, 'under way')}" for r in self.sent)

