"""A real Prometheus in a child process, on loopback, with temporary storage.

Test equipment (also used by the demo): Debian's ``prometheus`` binary on a
random 127.0.0.1 port, its storage in a temporary folder, stopped on exit.
Give it a configuration made from a shipped file (``deploy_files.deploy_config``)
so the tests run what operators install.

    with PrometheusProcess(deploy_config("jupyter-server.yml", token_file, targets)) as prometheus:
        prometheus.wait_for_scrapes_after(time.time())
        prometheus.values("sum by (handler) (rucio_jupyterlab_http_requests_total)", "handler")
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import requests

from .child_process import LoopbackService


class PrometheusError(Exception):
    """Prometheus answered a query with an error."""


class PromQLAPI:
    """Prometheus' HTTP query API (``/api/v1/...``), which VictoriaMetrics answers too."""

    session: requests.Session
    url: str  # the server's root URL, ending in "/"

    def api(self, path: str, **params: Any) -> Any:
        """``GET /api/v1/<path>``'s ``data``; raises ``PrometheusError`` with Prometheus' message on error."""
        response = self.session.get(self.url + "api/v1/" + path, params=params, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (now, or at the Unix time ``at``); the result vector (or a scalar/string in a list)."""
        data = self.api("query", query=expr, **({} if at is None else {"time": f"{at:.3f}"}))
        return data["result"] if data["resultType"] in ("vector", "matrix") else [{"value": data["result"]}]

    def values(self, expr: str, *by: str, at: float | None = None) -> dict[tuple[str, ...], float]:
        """An instant query as ``{(label values of by...): value}``."""
        return {
            tuple(r["metric"].get(label, "") for label in by): float(r["value"][1]) for r in self.query(expr, at)
        }


class PrometheusProcess(PromQLAPI, LoopbackService):
    """``prometheus`` on 127.0.0.1 with ``config`` and temporary storage; stopped on exit."""

    name = "prometheus"
    stop_seconds = 15.0

    def __init__(self, config: dict[str, Any], agent: bool = False) -> None:
        """``agent``: agent mode (scrape and remote-write only: no queries, no rules), as a scraping shard runs."""
        super().__init__("rucio-metrics-prometheus-", "prometheus.log")
        self.config = config
        self.agent = agent

    def start(self) -> None:
        config_file = self.write_config("prometheus.yml", self.config)
        storage = (["--enable-feature=agent", f"--storage.agent.path={self.root / 'data'}"] if self.agent else
                   [f"--storage.tsdb.path={self.root / 'data'}", "--storage.tsdb.retention.time=1h"])
        command = [
            "prometheus",
            f"--config.file={config_file}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *storage,
        ]
        self.start_and_wait(
            command, dict(os.environ), lambda: self.session.get(self.url + "-/ready", timeout=2).status_code == 200, 30
        )

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["activeTargets"])

    def wait_for_targets(self, count: int, seconds: float = 30) -> list[dict[str, Any]]:
        """Wait until ``count`` targets are discovered and every one has been scraped."""
        return _poll(
            self.targets, lambda ts: len(ts) == count and all(t["health"] != "unknown" for t in ts), seconds,
            lambda ts: f"expected {count} scraped targets within {seconds} s, got {ts}\n{self.log()}",
        )

    def wait_for_scrapes_after(self, since: float, seconds: float = 30) -> list[dict[str, Any]]:
        """Wait until every target has been scraped, successfully, after the wall-clock time ``since``."""
        targets = _poll(
            self.targets, lambda ts: bool(ts) and all(_scraped_after(t, since) for t in ts), seconds,
            lambda ts: f"no scrape of every target after {since} within {seconds} s: {ts}",
        )
        bad = [t for t in targets if t["health"] != "up"]
        if bad:
            raise AssertionError(f"scrape failed: {bad}")
        return targets

    def wait_for_rule_evaluation_after(self, since: float, seconds: float = 30) -> list[dict[str, Any]]:
        """Wait until every rule group has been evaluated after ``since``; return the groups."""
        return _poll(
            lambda: list(self.api("rules")["groups"]),
            lambda gs: bool(gs) and all(_timestamp(g["lastEvaluation"]) > since for g in gs), seconds,
            lambda gs: f"rules were not evaluated after {since} within {seconds} s: {gs}",
        )


def _poll(
    fetch: Callable[[], list[dict[str, Any]]],
    done: Callable[[list[dict[str, Any]]], bool],
    seconds: float,
    failure: Callable[[list[dict[str, Any]]], str],
) -> list[dict[str, Any]]:
    """``fetch()`` every 0.2 s until ``done`` with it; the last value, or AssertionError(``failure(value)``)."""
    deadline = time.monotonic() + seconds
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(failure(value))
        time.sleep(0.2)
        value = fetch()
    return value


def _scraped_after(target: dict[str, Any], since: float) -> bool:
    return _timestamp(target["lastScrape"]) > since


def _timestamp(rfc3339: str) -> float:
    """Prometheus' RFC 3339 time (nanosecond fraction, "Z" or an offset) as a Unix time; 0 for "never"."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339)
    if not match or match.group(1).startswith("0001-"):
        return 0.0
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(match.group(1) + zone).timestamp() + float(match.group(2) or 0)
