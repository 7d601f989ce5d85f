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

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from .token_file import TokenFile, TokenFileError

_BEARER = re.compile(r"(?:bearer|token)\s+(\S+)\s*$", re.IGNORECASE)


class MetricsHandler(RequestHandler):
    """``GET /metrics``: the registry's exposition, when the request carries the token (if one is set)."""

    def initialize(self, registry: CollectorRegistry, token: TokenFile | None, log: logging.Logger) -> None:
        self.registry = registry
        self.token = token
        self.log = log

    def get(self) -> None:
        if self.token is not None and not self._authorized(self.token):
            return
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))

    def _authorized(self, token: TokenFile) -> bool:
        try:
            expected = token.read()
        except TokenFileError as e:
            # Refuse rather than serve unauthenticated: the operator asked for a token.
            self.log.error("rucio_metrics: RucioMetrics.metrics_token_file %s; scrape refused (503)", e)
            self._refuse(503)
            return False
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
        self.set_status(status)
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.finish(f"{status}: {self._reason}\n")


def _quiet(handler: RequestHandler) -> None:
    """No access log line per scrape (a fleet scrapes every server every few seconds)."""


def metrics_app(registry: CollectorRegistry, token: TokenFile | None, log: logging.Logger) -> Application:
    """The listener's application: ``/metrics`` and nothing else (any other path is 404)."""
    return Application(
        [(r"/metrics", MetricsHandler, {"registry": registry, "token": token, "log": log})],
        log_function=_quiet,
    )


def start_metrics_listener(
    ip: str, port: int, token_file: str, log: logging.Logger, registry: CollectorRegistry = REGISTRY,
) -> HTTPServer | None:
    """Listen on ``ip:port``; the server, or None (with an error naming the option) when it cannot start."""
    token: TokenFile | None = None
    if token_file:
        token = TokenFile(token_file)
        try:
            token.read()
        except TokenFileError as e:
            log.error(
                "rucio_metrics: RucioMetrics.metrics_token_file %s; the metrics listener stays off "
                "(<base_url>metrics still serves)", e,
            )
            return None
    try:
        sockets = bind_sockets(port, ip or None, family=socket.AF_UNSPEC)
    except (OSError, ValueError) as e:
        log.error(
            "rucio_metrics: RucioMetrics.metrics_port = %d, RucioMetrics.metrics_ip = %r: cannot listen there (%s); "
            "the metrics listener stays off (<base_url>metrics still serves)", port, ip, e,
        )
        return None
    server = HTTPServer(metrics_app(registry, token, log))
    server.add_sockets(sockets)
    if token is None:
        log.warning(
            "rucio_metrics: metrics listener on %s:%d asks for no token (RucioMetrics.metrics_token_file is "
            "empty): anyone who reaches that address reads the metrics, so gate it with a network policy",
            ip, port,
        )
    else:
        log.info("rucio_metrics: metrics listener on %s:%d, token from %s", ip, port, token_file)
    return server
