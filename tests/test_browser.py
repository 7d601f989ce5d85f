"""The Rucio panel in JupyterLab, in a real browser: rucio_metrics counts what the browser sent.

Every other test calls the routes with a client of ours. Users run the Rucio
extension's own front end, which polls, aborts and calls routes without the
parameters our tests send. Here headless Chromium (Debian's, driven by
Playwright; ``tests/support/browser.py``) opens JupyterLab with
rucio-jupyterlab and rucio_metrics (``tests/servers/jupyter_server_process.py``),
whose instances are a real Rucio server's (``atlas`` in replica mode, ``cms``
in download mode), and a user drives the panel (``tests/support/rucio_panel.py``):
settings and log-in, the scope list, a search, a dataset's files, a dataset
already available and its rule link, an unknown scope, a replica-mode wait that
Rucio ends while the panel polls, a reload while a search waits for a slow
Rucio, then the other instance and a real download.

Then the browser's own network log of every ``rucio-jupyterlab/`` request
(an aborted one as 499) must equal what ``rucio_jupyterlab_http_requests_total``
counted, route by route, method by method, status by status; the calls to Rucio
counted must be what the Rucio server logged; a real Prometheus scraping the
server must hold the same counts. Screenshots of each step, Prometheus' graph of
the session and the two side by side go to ``$RUCIO_METRICS_ARTEFACTS/browser/``
when that is set (``scripts/panel-screenshot`` takes the README's picture from
there), else to the test's temporary folder.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

from .servers.jupyter_server_process import METRICS_TOKEN, JupyterServerProcess, sample
from .servers.prometheus_process import PrometheusProcess
from .servers.rucio_server import RucioServer
from .servers.rucio_server_setup import ACCOUNT, DATASETS, DESTINATION_RSE, FILES, USERNAME
from .support.browser import ABORTED, ChromiumUnavailable, NetworkLog, chromium, serve_icon_font
from .support.deploy_files import deploy_config
from .support.durations import Stopwatch, assert_plausible_durations
from .support.route_samples import HTTP, Samples, changes, logged_calls, outbound_calls
from .support.rucio_panel import RucioPanel

ARTEFACTS = "RUCIO_METRICS_ARTEFACTS"
GALLERY = "panel-and-prometheus.png"
WAIT_DATASET = "data18:RAW.dataset"  # its files are on tape only: a rule on the hub's RSE waits for a transfer
DOWNLOAD_DID = "user.alice:panel-download.root"
DOWNLOAD_BYTES = 30_000
VIEWPORT: ViewportSize = {"width": 1280, "height": 720}
PANEL_WIDTH = 340  # pixels: the panel's tabs in one row
# What Prometheus' graph shows of the session, beside the panel.
GRAPH = "sum by (handler, status_code) (rucio_jupyterlab_http_requests_total) > 0"
# Run in Prometheus' classic graph page: the graph's legend, as text.
LEGEND_JS = "Array.from(document.querySelectorAll('.graph_wrapper .legend .label')).map(s => s.textContent)"


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    folder = os.environ.get(ARTEFACTS)
    return Path(folder) / "browser" if folder else tmp_path / "screenshots"


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        try:
            browser = chromium(playwright)
        except ChromiumUnavailable as e:
            pytest.skip(f"Chromium cannot start here: {e}")
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def prometheus_scraping(server: JupyterServerProcess, folder: Path) -> Iterator[PrometheusProcess]:
    """The shipped scrape config for one server, scraping its metrics listener every second."""
    token_file = folder / "metrics-token"
    token_file.write_text(METRICS_TOKEN)
    target = {"targets": [f"127.0.0.1:{server.metrics_port}"]}
    with PrometheusProcess(deploy_config("jupyter-server.yml", token_file, static_configs=[target])) as prometheus:
        yield prometheus


class Session:
    """The servers, the panel and the browser's log, with the counters and Rucio's log as they were at the start."""

    def __init__(self, rucio: RucioServer, server: JupyterServerProcess, panel: RucioPanel, log: NetworkLog) -> None:
        self.rucio, self.server, self.panel, self.log = rucio, server, panel, log
        self.before = server.samples()
        self.rucio_log_start = 0  # set once Rucio is there, before the panel calls it
        # Index in Rucio's log of each call this server did not make: whose it was.
        self.not_ours: dict[int, str] = {}

    def change(self, name: str, **labels: str) -> float:
        """How much one sample moved since the start."""
        return (sample(self.server.samples(), name, **labels) or 0.0) - (sample(self.before, name, **labels) or 0.0)

    def wait(self, done: Callable[[], bool], what: str | Callable[[], str], seconds: float = 30) -> None:
        """Until ``done()``; the browser's events are delivered meanwhile. ``what`` says what did not happen."""
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline, what if isinstance(what, str) else what()
            self.panel.page.wait_for_timeout(100)

    def rucio_log_length(self) -> int:
        return len(self.rucio.access_log())

    def others_made(self, start: int, who: str, calls: re.Pattern[str]) -> None:
        """The calls in Rucio's log from ``start`` on whose ``METHOD path`` matches ``calls`` were ``who``'s."""
        for i, (method, path, _) in enumerate(self.rucio.access_log()[start:], start):
            if calls.fullmatch(f"{method} {path}"):
                self.not_ours.setdefault(i, who)


def test_the_rucio_panel_in_chromium_is_counted_as_the_browser_saw_it(
    browser: Browser, artefacts: Path, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        rucio = RucioServer()
        stack.callback(rucio.stop)
        # Rucio takes the longest to start: JupyterLab, Prometheus and the page start meanwhile (none calls it).
        rucio_started = stack.enter_context(ThreadPoolExecutor(1)).submit(start_with_a_file, rucio)
        instances = [rucio.instance_config("atlas"), rucio.instance_config("cms", mode="download")]
        server = stack.enter_context(JupyterServerProcess(base_url="/user/alice/", rucio_instances=instances,
                                                          metrics_listener=True, lab=True))
        prometheus = stack.enter_context(prometheus_scraping(server, tmp_path))
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        stack.callback(context.close)
        serve_icon_font(context)
        log = NetworkLog(context, server.url(""), "rucio-jupyterlab/")
        page = context.new_page()
        page.clock.install()  # the panel's polls, moved on by RucioPanel.poll_until
        panel = RucioPanel(page, artefacts)
        session = Session(rucio, server, panel, log)
        with Stopwatch() as wall:
            panel.open(server.lab_url(), width=PANEL_WIDTH)
            panel.shot("settings")
            rucio_started.result()
            session.rucio_log_start = session.rucio_log_length()
            log_in_and_explore(session)
            wait_for_a_replica(session)
            reload_while_rucio_is_slow(session)
            download(session)
            # The panel's timers stop; what it sent ends.
            page.clock.pause_at(page.evaluate("Date.now()") + 1000)
            log.settle(page)
        after = server.samples()

        counted = requests_counted(session.before, after)
        assert counted == {k: float(n) for k, n in log.counts().items()}, log
        assert sum(counted.values()) == len(log.sent) > 40
        assert_plausible_durations(session.before, after, wall.seconds, concurrency=6)
        assert_rucio_calls_are_the_servers_log(session, after)
        assert_prometheus_holds_the_same(prometheus, log)
        graph_the_session(browser, prometheus, log, wall.seconds, artefacts / "prometheus-graph.png")
    side_by_side(browser, ("The Rucio panel in JupyterLab (Chromium)", artefacts / "panel.png"),
                 ("Prometheus, scraping the same server: the requests the panel sent",
                  artefacts / "prometheus-graph.png"), artefacts / GALLERY)


def requests_counted(before: Samples, after: Samples) -> dict[tuple[str, str, str], float]:
    """``rucio_jupyterlab_http_requests_total``'s growth, by ``(handler, method, status_code)``."""
    return {(labels["handler"], labels["method"], labels["status_code"]): value
            for (name, frozen), value in changes(before, after).items() if name == HTTP + "requests_total"
            for labels in [dict(frozen)]}


def start_with_a_file(rucio: RucioServer) -> None:
    """The Rucio server, with the file the download will fetch."""
    rucio.start()
    rucio.add_file(DESTINATION_RSE, DOWNLOAD_DID, b"d" * DOWNLOAD_BYTES)


def log_in_and_explore(s: Session) -> None:
    panel = s.panel
    panel.log_in("ATLAS", USERNAME, s.rucio.password, ACCOUNT)
    panel.shot("logged-in")

    panel.explore()
    assert panel.open_scopes() == ["data18", "mc16", "user.alice"]
    panel.shot("scope-list")
    panel.pick_scope("data18")
    found = panel.search("data18:*")
    # Containers, then datasets, then files, each by name whatever its case: the panel's order.
    assert found == ["data18:AOD.container", *(f"data18:{d}" for d in sorted(DATASETS, key=str.lower)),
                     *(f"data18:{f}" for f in sorted(FILES))]
    panel.shot("search")
    assert panel.files_of("data18:AOD.dataset") == ["data18:file1.root", "data18:file2.root"]
    panel.shot("files-of-a-dataset")
    panel.close_popover()

    # AOD.dataset has a rule on the hub's RSE from the start: its files are there, and the rule's link works.
    panel.toggle("data18:AOD.dataset")
    link = panel.poll_until("All files available")
    panel.shot("dataset-available")
    start = s.rucio_log_length()
    with s.panel.page.context.expect_page() as opened:
        link.click()
    rule_page = opened.value
    rule_page.wait_for_load_state()
    # The route answered 302 to Rucio's web UI, which a REST-only Rucio server does not have (404).
    assert re.fullmatch(rf"{s.rucio.url}/ui/rule\?rule_id=[0-9a-f]{{32}}", rule_page.url), rule_page.url
    rule_page.close()
    s.others_made(start, "the browser, following the rule link", re.compile(r"GET /ui/rule\?.*"))
    panel.toggle("data18:AOD.dataset")

    assert panel.search("nosuchscope:*") == []
    assert panel.error() == ('No DIDs found for scope: "nosuchscope". Please check the parameters or try a '
                             "different search.")
    panel.shot("unknown-scope")


def wait_for_a_replica(s: Session) -> None:
    """Make available in replica mode: the panel polls while Rucio replicates, until the files are there."""
    panel = s.panel
    assert WAIT_DATASET in panel.search("data18:*")
    panel.toggle(WAIT_DATASET)
    panel.poll_until("Make Available").click()
    panel.poll_until("Replicating files...")
    panel.shot("replicating")
    atlas = {"rucio_instance": "atlas", "mode": "replica"}
    assert sample(s.server.samples(), "rucio_jupyterlab_time_to_data_waits", **atlas) == 1

    # The transfer ends, as a transfer tool would end it; the panel's next polls see the files there.
    start = s.rucio_log_length()
    s.rucio.finish_transfer(DESTINATION_RSE, [f"data18:{name}" for name in DATASETS["RAW.dataset"]])
    # Rucio's client, as root (a token it may ask for, then the replicas' new state): not this server's calls.
    s.others_made(start, "the transfer tool", re.compile(r"GET /auth/userpass|PUT /replicas"))
    panel.poll_until("All files available")
    panel.shot("replicated")
    panel.root.screenshot(path=s.panel.shots / "panel.png")  # the gallery's half
    assert sample(s.server.samples(), "rucio_jupyterlab_time_to_data_waits", **atlas) == 0
    assert s.change("rucio_jupyterlab_time_to_data_seconds_count", **atlas, outcome="available") == 1
    assert s.change("rucio_jupyterlab_time_to_data_make_available_total", **atlas, outcome="rule_created") == 1


def reload_while_rucio_is_slow(s: Session) -> None:
    """A search waits for a Rucio that does not answer; the user reloads: counted once, as 499."""
    route = {"handler": "/rucio-jupyterlab/did-search", "method": "GET"}
    in_progress = HTTP + "requests_in_progress"
    searched = s.change("rucio_jupyterlab_rucio_requests_total", instance="atlas", operation="search_did",
                        outcome="2xx")
    with s.rucio.paused():
        s.panel.type_search("mc16:*")
        s.panel.text("Loading...").wait_for()
        s.wait(lambda: [s.log.route(r) for r in s.log.pending] == [route["handler"]]
             and sample(s.server.samples(), in_progress, **route) == 1,
             lambda: f"not the one request under way: the browser waits for {s.log.pending}, the server serves "
                     f"{sample(s.server.samples(), in_progress, **route)} searches")
        s.panel.shot("search-waiting-for-rucio")
        s.panel.reload()
        s.log.settle(s.panel.page)
        assert s.log.counts()[(route["handler"], "GET", str(ABORTED))] == 1
        assert s.change(HTTP + "requests_total", **route, status_code=str(ABORTED)) == 1
        assert sample(s.server.samples(), in_progress, **route) == 0
    # Rucio answers the search it held; the handler ends, its client long gone: nothing more is counted for it.
    s.wait(lambda: s.change("rucio_jupyterlab_rucio_requests_total", instance="atlas", operation="search_did",
                          outcome="2xx") == searched + 1, "the held search did not end")
    s.panel.shot("reloaded")


def download(s: Session) -> None:
    """The other instance, in download mode: a real download of a real file, with its transfer series."""
    panel = s.panel
    panel.log_in("CMS", USERNAME, s.rucio.password, ACCOUNT)
    panel.explore()
    assert panel.search(DOWNLOAD_DID) == [DOWNLOAD_DID]
    panel.toggle(DOWNLOAD_DID)
    make_available = panel.poll_until("Make Available")
    panel.shot("download-not-available")
    start = s.rucio_log_length()
    make_available.click()
    s.wait(lambda: s.change("rucio_jupyterlab_transfers_ended_total", rucio_instance="cms", direction="download",
                          outcome="succeeded") == 1, "the download did not end", seconds=60)
    # The download runs Rucio's own client in a child process: its calls are not this server's. Meanwhile
    # the server's own are the panel's looks at the file's status.
    scope, name = DOWNLOAD_DID.split(":")
    s.others_made(start, "the download's child process", re.compile(rf"(?!GET /dids/{scope}/{name}/files$).*"))
    panel.poll_until("Available")
    panel.shot("downloaded")
    cms = {"rucio_instance": "cms", "direction": "download"}
    assert s.change("rucio_jupyterlab_transfers_started_total", **cms) == 1
    assert s.change("rucio_jupyterlab_transfer_bytes_total", **cms) == DOWNLOAD_BYTES
    assert sample(s.server.samples(), "rucio_jupyterlab_transfers_in_progress", **cms) == 0
    assert s.change("rucio_jupyterlab_time_to_data_seconds_count", rucio_instance="cms", mode="download",
                    outcome="available") == 1


def assert_rucio_calls_are_the_servers_log(s: Session, after: Samples) -> None:
    """Every call Rucio logged is counted once, under its operation and status class, but others' calls."""
    # Chromium may ask the rule link's origin for its icon, when it likes: the browser's, whenever it came.
    s.others_made(s.rucio_log_start, "the browser, asking Rucio for its icon", re.compile(r"GET /favicon\.ico"))
    entries = s.rucio.access_log()
    ours = [entry for i, entry in enumerate(entries) if i >= s.rucio_log_start and i not in s.not_ours]
    others = {who: [entries[i] for i, w in s.not_ours.items() if w == who] for who in s.not_ours.values()}
    assert ("PUT", "/replicas", 200) in others["the transfer tool"]
    assert ("POST", "/replicas/list", 200) in others["the download's child process"]
    assert [status for _, _, status in others["the browser, following the rule link"]] == [404]
    assert dict(outbound_calls(changes(s.before, after))) == dict(logged_calls(ours))


def assert_prometheus_holds_the_same(prometheus: PrometheusProcess, log: NetworkLog) -> None:
    """Prometheus, scraping the server's metrics listener with the shipped config, has the browser's counts too."""
    prometheus.wait_for_scrapes_after(time.time())
    scraped = prometheus.values("sum by (handler, method, status_code) (rucio_jupyterlab_http_requests_total) > 0",
                                "handler", "method", "status_code")
    assert scraped == {k: float(n) for k, n in log.counts().items()}


def graph_the_session(browser: Browser, prometheus: PrometheusProcess, log: NetworkLog, seconds: float,
                      path: Path) -> None:
    """Prometheus' classic graph page of the session's requests, once its legend lists every route and status."""
    params = {"g0.expr": GRAPH, "g0.tab": "0", "g0.range_input": f"{int(seconds) + 5}s"}
    wanted = {f'{{handler="{route}",status_code="{status}"}}' for route, _, status in log.counts()}
    with new_page(browser, {"width": 960, "height": 1000}) as page:
        page.goto(prometheus.url + "classic/graph?" + urllib.parse.urlencode(params))
        for _ in range(300):
            if wanted <= set(page.evaluate(LEGEND_JS)):
                break
            page.wait_for_timeout(100)
        else:
            raise AssertionError(f"the graph's legend lacks some of {sorted(wanted)}: {page.evaluate(LEGEND_JS)}")
        page.wait_for_timeout(500)  # the last frame drawn
        page.evaluate("document.activeElement.blur()")  # no cursor in the expression box
        page.locator(".graph_wrapper").screenshot(path=path)  # the graph and its legend


def side_by_side(browser: Browser, left: tuple[str, Path], right: tuple[str, Path], path: Path) -> None:
    """Two pictures with their titles, side by side, as one PNG."""
    figures = "".join(
        f'<figure><figcaption>{title}</figcaption><img src="data:image/png;base64,'
        f'{base64.b64encode(picture.read_bytes()).decode()}"></figure>' for title, picture in (left, right)
    )
    style = ("body { margin: 0; padding: 12px; background: #fff; display: flex; gap: 16px; align-items: flex-start;"
             " width: max-content; font: 14px sans-serif; color: #333 }"
             " figure { margin: 0 } figcaption { margin: 0 0 6px } img { display: block; border: 1px solid #ccc }")
    with new_page(browser, {"width": 800, "height": 600}) as page:
        page.set_content(f"<!doctype html><html><head><style>{style}</style></head><body>{figures}</body></html>")
        width, height = page.evaluate("[document.body.scrollWidth, document.body.scrollHeight]")
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=path, full_page=True)


@contextlib.contextmanager
def new_page(browser: Browser, viewport: ViewportSize) -> Iterator[Page]:
    """A page in a context of its own (the panel's has a clock moved ahead)."""
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    try:
        yield context.new_page()
    finally:
        context.close()

