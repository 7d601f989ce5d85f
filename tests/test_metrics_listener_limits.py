"""The metrics listener's bounds, in process: what one client may hold, and how refusals are logged.

A scrape is one short GET. Anyone who reaches the port may try more: an
idle or slow connection, a body, huge headers, a stream of bad tokens. The
listener is started here on its own event loop in a thread, with the
timeouts shortened so the tests take seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter

from rucio_metrics import metrics_listener
from rucio_metrics.metrics_listener import MAX_BODY_BYTES, RefusalLog, start_metrics_listener

TOKEN = "a-metrics-token-of-32-characters"
SHORT = 1.0  # seconds, for the idle and body timeouts here


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Listener:
    """``start_metrics_listener`` on a free loopback port, served from a thread's event loop."""

    def __init__(self, token_file: Path) -> None:
        self.records = Records()
        self.log = logging.getLogger(f"test-listener-{id(self)}")
        self.log.addHandler(self.records)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        registry = CollectorRegistry()
        Counter("listener_test_total", "A family to serve.", registry=registry).inc()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.server = None

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = start_metrics_listener("127.0.0.1", self.port, str(token_file), self.log, registry)
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert started.wait(10) and self.server is not None, self.records.messages

    def stop(self) -> None:
        async def close() -> None:
            assert self.server is not None
            self.server.stop()
            await self.server.close_all_connections()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def get(self, token: str | None = TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(f"http://127.0.0.1:{self.port}/metrics", headers=headers, timeout=10)


@pytest.fixture()
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    monkeypatch.setattr(metrics_listener, "IDLE_SECONDS", SHORT)
    monkeypatch.setattr(metrics_listener, "BODY_SECONDS", SHORT)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    served = Listener(token_file)
    yield served
    served.stop()


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent before."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def test_a_scrape_with_the_token_is_served(listener: Listener) -> None:
    got = listener.get()
    assert got.status_code == 200
    assert "listener_test_total 1.0" in got.text


def test_a_connection_that_sends_nothing_is_closed(listener: Listener) -> None:
    with listener.connect() as sock:
        closed, _ = closed_within(sock, SHORT + 5)
    assert closed


def test_an_idle_connection_after_a_scrape_is_closed(listener: Listener) -> None:
    with listener.connect() as sock:
        sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        closed, received = closed_within(sock, SHORT + 5)
    assert received.startswith(b"HTTP/1.1 200")
    assert closed


def test_a_body_larger_than_the_bound_is_refused_unread(listener: Listener) -> None:
    with listener.connect() as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 90000000\r\n\r\n" + b"x" * 65536)
        closed, received = closed_within(sock, 5)
    assert closed
    assert received.startswith(b"HTTP/1.1 400")
    assert MAX_BODY_BYTES <= 64 * 1024


def test_a_body_that_never_arrives_is_given_up(listener: Listener) -> None:
    with listener.connect() as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        closed, _ = closed_within(sock, SHORT + 5)
    assert closed


def test_headers_larger_than_the_bound_are_refused(listener: Listener) -> None:
    with listener.connect() as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (64 * 1024) + b"\r\n\r\n")
        closed, received = closed_within(sock, 5)
    assert closed
    assert b"200" not in received


def test_a_stream_of_refused_requests_is_one_log_line(listener: Listener) -> None:
    for _ in range(20):
        assert listener.get(token=None).status_code == 401
        assert listener.get(token="not-the-token-at-all").status_code == 403
    assert listener.get().status_code == 200
    refusals = [m for m in listener.records.messages if "refused" in m]
    assert refusals == [
        "rucio_metrics: the metrics listener refused 1 request(s) (1 x 401); "
        "the next refusals are logged at most once every 60 s"
    ]
    assert all("not-the-token" not in m and TOKEN not in m for m in listener.records.messages)


def test_another_method_or_path_is_a_refusal_too(listener: Listener) -> None:
    url = f"http://127.0.0.1:{listener.port}"
    assert requests.post(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).status_code == 405
    assert requests.get(f"{url}/api/kernels", timeout=10).status_code == 404
    assert listener.get().status_code == 200
    assert [m for m in listener.records.messages if "refused" in m] == [
        "rucio_metrics: the metrics listener refused 1 request(s) (1 x 405); "
        "the next refusals are logged at most once every 60 s"
    ]


def test_refusals_are_counted_and_logged_once_a_minute() -> None:
    records = Records()
    log = logging.getLogger("test-refusal-log")
    log.addHandler(records)
    log.propagate = False
    now = [100.0]
    refusals = RefusalLog(log, every=60, clock=lambda: now[0])
    refusals.refused(401)
    for status in (401, 403, 403, 404):
        now[0] += 10
        refusals.refused(status)
    assert len(records.messages) == 1
    now[0] += 30  # 70 s after the first line
    refusals.refused(403)
    assert len(records.messages) == 2
    assert records.messages[1].startswith(
        "rucio_metrics: the metrics listener refused 5 request(s) in the last 70 s (1 x 401, 3 x 403, 1 x 404)"
    )


def test_a_token_shorter_than_16_characters_keeps_the_listener_off(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("x" * 15)
    records = Records()
    log = logging.getLogger("test-short-token")
    log.addHandler(records)
    log.propagate = False
    assert start_metrics_listener("127.0.0.1", 0, str(token_file), log, CollectorRegistry()) is None
    assert records.messages == [
        "rucio_metrics: RucioMetrics.metrics_token_file: the file holds a token shorter than 16 characters "
        "(make one with: openssl rand -hex 32); the metrics listener stays off (<base_url>metrics still serves)"
    ]


@pytest.mark.parametrize("ip", ["", "*"])
def test_an_empty_or_star_address_binds_every_address(ip: str, tmp_path: Path) -> None:
    # As the option's help says: every address of the machine, IPv4 and IPv6 where there is IPv6.
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    loop = asyncio.new_event_loop()
    try:
        async def start() -> list[tuple[str, ...]]:
            server = start_metrics_listener(ip, 0, str(token_file), logging.getLogger("test-bind"), CollectorRegistry())
            assert server is not None
            bound = [sock.getsockname()[:1] for sock in server._sockets.values()]
            server.stop()
            return bound

        bound = loop.run_until_complete(start())
    finally:
        loop.close()
    assert ("0.0.0.0",) in bound
