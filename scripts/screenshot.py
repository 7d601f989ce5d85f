"""The README's picture: Prometheus' classic graph page over the demo's server.

The demo's pieces (a real Jupyter server with rucio-jupyterlab and
rucio_metrics, a real Prometheus running the shipped
deploy/prometheus/jupyter-server.yml), with the Rucio stand-in in place of the
demo's real Rucio server, all on 127.0.0.1, get steady traffic on
several Rucio routes for ``--seconds``; halfway through, the stand-in's DID
search slows down. Then headless Chromium opens Prometheus' ``/classic/graph``
with two graphs, requests per second and mean latency per route, and, once both
legends list every route that got traffic, saves the page as a PNG. Chromium
is driven over its DevTools protocol on loopback, in a fresh profile, with
name resolution off for every host but 127.0.0.1; the profile and every
process are gone when the script ends.

    scripts/screenshot                    # docs/prometheus-graph.png, about three minutes
    scripts/screenshot --seconds 20 --output /tmp/graph.png
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from tornado.websocket import WebSocketClientConnection, websocket_connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo import prometheus_for

from tests.servers.jupyter_server_process import REPO, TOKEN, JupyterServerProcess
from tests.support.rucio_standin import RucioStandIn, userpass_credentials

PICTURE = REPO / "docs" / "prometheus-graph.png"

# Requests per second to each route, relative to base_url, as the Rucio UI of a few busy users might send them.
TRAFFIC = {
    "rucio-jupyterlab/instances": 2.0,
    "rucio-jupyterlab/file-browser?namespace=atlas&path=": 1.5,
    "rucio-jupyterlab/list-scopes?namespace=atlas": 1.0,
    "rucio-jupyterlab/files?namespace=atlas&did=data18:AOD.dataset": 1.2,
    "rucio-jupyterlab/did?namespace=cms&did=data18:AOD.dataset": 0.7,
    "rucio-jupyterlab/did-search?namespace=atlas&did=data18:*": 0.5,
    "rucio-jupyterlab/list-rses?namespace=atlas": 0.3,
}
# What happens halfway through: Rucio's DID search takes this much longer.
SLOWDOWN = ("GET /dids/[^/]+/dids/search", 0.4)

# How long the Rucio stand-in takes to answer, per Rucio endpoint, so the latency graph has shape: the
# picture needs a slowdown on demand halfway through, which a real Rucio server cannot give.
RUCIO_LATENCY = {
    "GET /scopes/": 0.120,
    "GET /rses": 0.040,
    "GET /dids/[^/]+/dids/search": 0.200,
    "GET /replicas/": 0.080,
    "GET /dids/.*/files": 0.060,
    "GET /dids/.*/rules": 0.030,
    "POST /rules/": 0.150,
}
WINDOW = "30s"  # rate() window: a few dozen scrapes at the 1 s interval the demo's Prometheus uses
GRAPHS = [
    f"sum by (handler) (rate(rucio_jupyterlab_http_requests_total[{WINDOW}]))",
    f"sum by (handler) (rate(rucio_jupyterlab_http_request_duration_seconds_sum[{WINDOW}]))\n"
    f"/ sum by (handler) (rate(rucio_jupyterlab_http_request_duration_seconds_count[{WINDOW}])) > 0",
]

WIDTH, HEIGHT = 1024, 1800
BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    "--no-default-browser-check", "--no-proxy-server", "--hide-scrollbars", "--force-device-scale-factor=1",
    # Loopback only: every other host name fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
]

# Run in the page: each graph's legend, as a list of its series' labels.
LEGENDS_JS = """Array.from(document.querySelectorAll('.graph_wrapper')).map(w =>
    Array.from(w.querySelectorAll('.legend .label')).map(s => s.textContent))"""
# What a click in the expression box does (size it to its text), then no focus, so no cursor;
# the height down to the end of the last graph's legend.
TIDY_JS = """(() => {
    for (const t of document.querySelectorAll('textarea[name=expr]')) {
        const border = t.offsetHeight - t.clientHeight;
        t.style.height = 'auto';
        t.style.height = (t.scrollHeight + border) + 'px';
    }
    document.activeElement.blur();
    const wrappers = document.querySelectorAll('.graph_wrapper');
    return Math.ceil(wrappers[wrappers.length - 1].getBoundingClientRect().bottom + window.scrollY) + 8;
})()"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150, help="how long the traffic runs (default 150)")
    parser.add_argument("--output", type=Path, default=PICTURE,
                        help="the PNG to write (default docs/prometheus-graph.png)")
    args = parser.parse_args(argv)
    browser = shutil.which("chromium")
    if browser is None:
        sys.exit("screenshot: no `chromium` on PATH (scripts/bootstrap installs Debian's package)")
    png, legends = take_picture(browser, args.seconds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(png)
    for expr, legend in zip(GRAPHS, legends):
        print(f"\n{' '.join(expr.split())}\n" + "\n".join(f"  {label}" for label in legend))
    print(f"\nscreenshot: wrote {args.output} ({len(png) // 1024} KB)")


def take_picture(browser: str, seconds: float) -> tuple[bytes, list[list[str]]]:
    """The demo's pieces, ``seconds`` of traffic, then the graph page as PNG and its legends."""
    shown_seconds = int(max(seconds - 40, seconds / 2))  # leave out the first rate window and the set-up
    with RucioStandIn() as rucio:
        for endpoint, delay in RUCIO_LATENCY.items():
            rucio.delay(endpoint, delay)
        instances = [rucio.instance_config("atlas"), rucio.instance_config("cms", mode="download")]
        server = JupyterServerProcess(base_url="/user/alice/", rucio_instances=instances, metrics_listener=True,
                                      other_extensions=True)
        try:
            with server, prometheus_for(server) as prometheus:
                if prometheus is None:
                    sys.exit("screenshot: no `prometheus` on PATH (scripts/bootstrap installs Debian's package)")
                log_in(server)
                print(f"screenshot: {len(TRAFFIC)} routes get traffic for {seconds:.0f} s; halfway through, "
                      f"the Rucio stand-in's DID search slows down by {SLOWDOWN[1]} s", flush=True)
                # The traffic goes on while the picture is taken, so the graphs end at full speed.
                with traffic(server, rucio, slowdown_after=seconds / 2) as tally:
                    time.sleep(seconds)
                    prometheus.wait_for_scrapes_after(time.time())
                    url = graph_url(prometheus.url, shown_seconds)
                    wanted = {"/" + path.split("?")[0] for path in TRAFFIC}
                    with headless_chromium(browser) as devtools_port:
                        picture = asyncio.run(capture(devtools_port, url, wanted, seconds=60))
                print("screenshot: responses " + ", ".join(f"{status}: {n}" for status, n in sorted(tally.items())))
        finally:
            shutil.rmtree(server.root, ignore_errors=True)  # its log and config: the picture is all we keep
    return picture


def log_in(server: JupyterServerProcess) -> None:
    """What a user does once in the Rucio UI: pick an instance, then log in to both."""
    server.request("PUT", "rucio-jupyterlab/instances", json={"instance": "atlas", "auth": "userpass"})
    for namespace in ("atlas", "cms"):
        server.request("PUT", "rucio-jupyterlab/auth", json=userpass_credentials(namespace)).raise_for_status()


@contextlib.contextmanager
def traffic(server: JupyterServerProcess, rucio: RucioStandIn, slowdown_after: float) -> Iterator[dict[int, int]]:
    """One thread per route, each at its rate from ``TRAFFIC``, until the block ends; the statuses counted.

    ``slowdown_after`` seconds in, the stand-in's DID search slows down (``SLOWDOWN``).
    """
    tally: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def route(path: str, per_second: float) -> None:
        with requests.Session() as session:
            session.trust_env = False  # loopback only, never through an HTTP proxy
            session.headers["Authorization"] = f"token {TOKEN}"
            due = time.monotonic()
            while not stop.is_set():
                try:
                    status = session.get(server.url(path), timeout=30).status_code
                except requests.RequestException as e:
                    errors.append(e)
                    return
                with lock:
                    tally[status] = tally.get(status, 0) + 1
                due += 1 / per_second
                stop.wait(max(0.0, due - time.monotonic()))

    slowdown = threading.Timer(slowdown_after, rucio.delay, SLOWDOWN)
    threads = [threading.Thread(target=route, args=item, daemon=True) for item in TRAFFIC.items()]
    for thread in [slowdown, *threads]:
        thread.start()
    try:
        yield tally
    finally:
        stop.set()
        slowdown.cancel()
        for thread in threads:
            thread.join(60)
    if errors or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"traffic failed: {errors or 'a route did not finish in time'}\n{server.log()[-4000:]}")


def graph_url(prometheus_url: str, seconds: int) -> str:
    """Prometheus' classic graph page with ``GRAPHS``, each over the last ``seconds``, on the graph tab."""
    params: dict[str, str] = {}
    for i, expr in enumerate(GRAPHS):
        params.update({f"g{i}.expr": expr, f"g{i}.tab": "0", f"g{i}.range_input": f"{seconds}s"})
    return prometheus_url + "classic/graph?" + urllib.parse.urlencode(params)


@contextlib.contextmanager
def headless_chromium(browser: str) -> Iterator[int]:
    """Headless Chromium in a fresh profile; its DevTools port on 127.0.0.1. Stopped and removed on exit."""
    with tempfile.TemporaryDirectory(prefix="rucio-metrics-chromium-") as tmp:
        profile = Path(tmp) / "profile"
        log_path = Path(tmp) / "chromium.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "HOME": tmp, "TMPDIR": tmp},  # whatever it leaves goes with the folder
            )
        try:
            yield _devtools_port(process, profile / "DevToolsActivePort", log_path)
        finally:
            _stop_group(process)


def _devtools_port(process: subprocess.Popen[bytes], port_file: Path, log_path: Path, seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text().split()[0])
        time.sleep(0.1)
    raise RuntimeError(f"chromium did not open its DevTools port:\n{log_path.read_text(errors='replace')[-4000:]}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop Chromium and the helpers it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class DevTools:
    """The few DevTools protocol calls the picture needs, over one page's WebSocket."""

    def __init__(self, connection: WebSocketClientConnection) -> None:
        self.connection = connection
        self.last_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        await self.connection.write_message(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:  # events come in between; the answer carries our id
            message = await self.connection.read_message()
            if message is None:
                raise RuntimeError(f"chromium closed the DevTools connection during {method}")
            answer = json.loads(message)
            if answer.get("id") == self.last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return dict(answer["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"in the page: {result['exceptionDetails']}")
        return result["result"].get("value")


async def capture(devtools_port: int, url: str, wanted: set[str], seconds: float) -> tuple[bytes, list[list[str]]]:
    """Open ``url``; once every graph's legend names every handler in ``wanted``, the page as PNG, and the legends."""
    connection = await websocket_connect(_page_socket(devtools_port), max_message_size=64 << 20)
    try:
        devtools = DevTools(connection)
        await devtools.call("Page.navigate", url=url)
        deadline = time.monotonic() + seconds
        legends: list[list[str]] = []
        while not _complete(legends, wanted):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the graphs did not show every route {sorted(wanted)} in {seconds} s: {legends}")
            await asyncio.sleep(0.5)
            legends = await devtools.evaluate(LEGENDS_JS) or []
        await asyncio.sleep(1)  # the last frame drawn
        height = await devtools.evaluate(TIDY_JS)
        shot = await devtools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                   clip={"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1})
        return base64.b64decode(shot["data"]), legends
    finally:
        connection.close()


def _page_socket(devtools_port: int, seconds: float = 10) -> str:
    """The DevTools WebSocket URL of Chromium's one page (about:blank), once it is there."""
    deadline = time.monotonic() + seconds
    with requests.Session() as session:
        session.trust_env = False
        while True:
            targets = session.get(f"http://127.0.0.1:{devtools_port}/json/list", timeout=10).json()
            pages = [t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"]
            if pages:
                return str(pages[0])
            if time.monotonic() > deadline:
                raise RuntimeError(f"chromium opened no page within {seconds} s: {targets}")
            time.sleep(0.1)


def _complete(legends: list[list[str]], wanted: set[str]) -> bool:
    return len(legends) == len(GRAPHS) and all(
        wanted <= set(re.findall(r'handler="([^"]+)"', " ".join(legend))) for legend in legends
    )


if __name__ == "__main__":
    main()
