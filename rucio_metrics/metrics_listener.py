"""A metrics listener of rucio_metrics' own: ``GET /metrics`` on a port of its own, with a token of its own.

The server's token (or a hub grant of ``access:servers``) opens the whole
server: kernels, files, the user's stored Rucio password. A credential that
should read metrics and nothing else needs an endpoint where nothing else is:
this listener serves the process's default registry (jupyter_server's
families and ours, the text ``<base_url>metrics`` gives) and no other path,
on an address the hub's proxy never routes to. It runs on the server's
IOLoop, like the handlers it measures, so a scrape never races a request.

    c.RucioMetrics.metrics_port = 9101
    c.RucioMetrics.metrics_token_file = "/etc/jupyter/metrics-token"
"""

from __future__ import annotations

import hmac
import logging
import re
import socket
import time
from collections import Counter
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from .token_file import TokenFile, TokenFileError, readable_by_others

_BEARER = re.compile(r"(?:bearer|token)\s+(\S+)\s*$", re.IGNORECASE)

# A token anyone could guess in a few tries is no gate: refused at start, like a missing one.
MIN_TOKEN_LENGTH = 16

# Bounds on what one client may hold: a scrape is one short GET, so a body, a slow request or an
# idle connection is never Prometheus. Prometheus opens a new connection when one was closed.
MAX_BODY_BYTES = 4096
MAX_HEADER_BYTES = 16 * 1024
IDLE_SECONDS = 10.0
BODY_SECONDS = 10.0

# Refused requests are logged at most this often, with their count by status.
REFUSAL_LOG_SECONDS = 60.0


class RefusalLog:
    """Refused requests, logged at most once per ``every`` seconds with how many there were.

    The first refusal is logged at once; later ones are counted, and the count is
    logged with the next refusal once ``every`` seconds have passed.
    """

    def __init__(
        self, log: logging.Logger, every: float = REFUSAL_LOG_SECONDS, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.every, self.clock = log, every, clock
        self._counts: Counter[int] = Counter()
        self._logged_at: float | None = None
        # What is wrong with the token file, as last logged; None while it reads well.
        self.token_file_problem: str | None = None

    def refused(self, status: int) -> None:
        self._counts[status] += 1
        now = self.clock()
        if self._logged_at is not None and now - self._logged_at < self.every:
            return
        since = "" if self._logged_at is None else f" in the last {now - self._logged_at:.0f} s"
        counts = ", ".join(f"{n} x {code}" for code, n in sorted(self._counts.items()))
        self.log.warning(
            "rucio_metrics: the metrics listener refused %d request(s)%s (%s); "
            "the next refusals are logged at most once every %.0f s",
            sum(self._counts.values()), since, counts, self.every,
        )
        self._counts.clear()
        self._logged_at = now


class MetricsHandler(RequestHandler):
    """``GET /metrics``: the registry's exposition, when the request carries the token (if one is set)."""

    def initialize(self, registry: CollectorRegistry, token: TokenFile | None, log: logging.Logger,
                   refusals: RefusalLog) -> None:
        self.registry = registry
        self.token = token
        self.log = log
        self.refusals = refusals

    def get(self) -> None:
        if self.token is not None and not self._authorized(self.token):
            return
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))

    def _authorized(self, token: TokenFile) -> bool:
        try:
            expected = token.read()
        except TokenFileError as e:
            # Refuse rather than serve unauthenticated: the operator asked for a token. The reason is
            # named when it appears or changes, not at every scrape; the refusals are counted with the rest.
            if self.refusals.token_file_problem != str(e):
                self.refusals.token_file_problem = str(e)
                self.log.error("rucio_metrics: RucioMetrics.metrics_token_file: the file %s; scrapes refused (503) "
                               "until it holds a token", e)
            self._refuse(503)
            return False
        self.refusals.token_file_problem = None
        m = _BEARER.match(self.request.headers.get("Authorization", ""))
        if m is None:
            self._refuse(401, {"WWW-Authenticate": 'Bearer realm="metrics"'})
            return False
        if not hmac.compare_digest(m.group(1).encode(), expected.encode()):
            self._refuse(403)
            return False
        return True

    def _refuse(self, status: int, headers: dict[str, str] | None = None) -> None:
        # Not send_error: it clears the headers, WWW-Authenticate included.
        self.refusals.refused(status)
        self.set_status(status)
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.finish(f"{status}: {self._reason}\n")


def metrics_app(registry: CollectorRegistry, token: TokenFile | None, log: logging.Logger) -> Application:
    """The listener's application: ``/metrics`` and nothing else (any other path is 404)."""
    refusals = RefusalLog(log)

    def log_request(handler: RequestHandler) -> None:
        # No line per scrape (a fleet scrapes every server every few seconds); paths and methods that
        # are not ours are refusals too, counted with the rest.
        status = handler.get_status()
        if status in (404, 405):  # Tornado's answers; MetricsHandler's own (401, 403, 503) it counted itself
            refusals.refused(status)

    return Application(
        [(r"/metrics", MetricsHandler, {"registry": registry, "token": token, "log": log, "refusals": refusals})],
        log_function=log_request,
    )


def start_metrics_listener(
    ip: str, port: int, token_file: str, log: logging.Logger, registry: CollectorRegistry = REGISTRY,
) -> HTTPServer | None:
    """Listen on ``ip:port``; the server, or None (with an error naming the option) when it cannot start."""
    token: TokenFile | None = None
    if token_file:
        token = TokenFile(token_file, min_length=MIN_TOKEN_LENGTH)
        try:
            token.read()
        except TokenFileError as e:
            log.error(
                "rucio_metrics: RucioMetrics.metrics_token_file: the file %s; the metrics listener stays off "
                "(<base_url>metrics still serves)", e,
            )
            return None
        if readable_by_others(token_file):
            log.warning(
                "rucio_metrics: RucioMetrics.metrics_token_file: the file may be read by its group or by "
                "anyone on the machine; make it readable by the server's user alone (chmod 600)",
            )
    try:
        sockets = bind_sockets(port, ip or None, family=socket.AF_UNSPEC)
    except (OSError, ValueError) as e:
        log.error(
            "rucio_metrics: RucioMetrics.metrics_port = %d, RucioMetrics.metrics_ip = %r: cannot listen there (%s); "
            "the metrics listener stays off (<base_url>metrics still serves)", port, ip, e,
        )
        return None
    server = HTTPServer(
        metrics_app(registry, token, log),
        max_body_size=MAX_BODY_BYTES,
        max_header_size=MAX_HEADER_BYTES,
        idle_connection_timeout=IDLE_SECONDS,
        body_timeout=BODY_SECONDS,
    )
    server.add_sockets(sockets)
    if token is None:
        log.warning(
            "rucio_metrics: metrics listener on %s:%d asks for no token (RucioMetrics.metrics_token_file is "
            "empty): anyone who reaches that address reads the metrics, so gate it with a network policy",
            ip, port,
        )
    else:
        log.info("rucio_metrics: metrics listener on %s:%d, asking for the token in RucioMetrics.metrics_token_file",
                 ip, port)
    return server
