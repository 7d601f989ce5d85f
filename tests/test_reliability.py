"""Reliability of a real Jupyter server with rucio-jupyterlab and rucio_metrics:
load, client disconnects, faults in handlers and in the instrumentation,
hostile input, and who may read /metrics. Loopback only; bounded in count and time."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
from tornado.httpclient import HTTPRequest

from .servers.jupyter_server_process import TOKEN, JupyterServerProcess, sample, unreachable_rucio_instance
from .support.durations import Stopwatch, assert_plausible_durations
from .support.load import send_all

REQUESTS = "rucio_jupyterlab_http_requests_total"
COUNT = "rucio_jupyterlab_http_request_duration_seconds_count"
IN_PROGRESS = "rucio_jupyterlab_http_requests_in_progress"
EXCEPTIONS = "rucio_jupyterlab_http_exceptions_total"
PREFIX = "rucio-jupyterlab"
CREDENTIALS = {"namespace": "atlas", "type": "userpass", "params": {"username": "u", "password": "p", "account": "a"}}
HEADERS = {"Authorization": f"token {TOKEN}"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server() -> Iterator[JupyterServerProcess]:
    with JupyterServerProcess(rucio_instances=[unreachable_rucio_instance()],
                              extensions={"tests.support.extra_routes_extension": True}) as server:
        assert server.request("PUT", f"{PREFIX}/auth", json=CREDENTIALS).status_code == 401  # stores credentials
        yield server


def requests_by(samples: Samples) -> Counter[tuple[str, str, str]]:
    counted: Counter[tuple[str, str, str]] = Counter()
    for (name, labels), value in samples.items():
        if name == REQUESTS:
            d = dict(labels)
            counted[(d["handler"], d["method"], d["status_code"])] = int(value)
    return counted


def delta(before: Samples, after: Samples, name: str) -> Counter[tuple[tuple[str, str], ...]]:
    changed: Counter[tuple[tuple[str, str], ...]] = Counter()
    for (n, labels), value in after.items():
        if n == name and value != before.get((n, labels), 0):
            changed[tuple(sorted(labels))] = int(value - before.get((n, labels), 0))
    return changed


def in_progress_total(samples: Samples) -> float:
    return sum(v for (n, _), v in samples.items() if n == IN_PROGRESS)


def wait_for(condition, seconds: float = 10) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_load_5000_requests_at_concurrency_50_are_counted_exactly(server):
    routes = [  # (path relative to base_url, its label): sync and async verbs, prepare rejections
        (f"{PREFIX}/instances", "/rucio-jupyterlab/instances"),                         # sync
        (f"{PREFIX}/upload/jobs?namespace=atlas", "/rucio-jupyterlab/upload/jobs"),     # sync
        (f"{PREFIX}/did?namespace=atlas&did=scope:name", "/rucio-jupyterlab/did"),      # async
        (f"{PREFIX}/test/slow?sleep=0.005", "/rucio-jupyterlab/test/slow"),             # async, slow
        (f"{PREFIX}/files", "/rucio-jupyterlab/files"),                                 # 400 in prepare()
    ]
    total = 5000
    batch = [HTTPRequest(server.url(routes[i % len(routes)][0]), headers=HEADERS, request_timeout=60)
             for i in range(total)]
    with Stopwatch() as wall:
        before = server.samples()
        tally = send_all(batch, concurrency=50)
        after = server.samples()

    assert sum(tally.values()) == total
    assert not [k for k in tally if k[2] == 599], "the client got no response for some requests"
    sent: Counter[tuple[str, str, str]] = Counter()
    for (method, url, status), n in tally.items():
        label = next(label for path, label in routes if url == server.url(path))
        sent[(label, method, str(status))] += n
    counted = requests_by(after) - requests_by(before)
    assert counted == sent
    assert sum(counted.values()) == total
    for label in {label for _, label in routes}:
        labels = frozenset({"handler": label, "method": "GET"}.items())
        assert after[(COUNT, labels)] - before.get((COUNT, labels), 0) == total / len(routes)
    assert in_progress_total(after) == 0
    assert_plausible_durations(before, after, wall.seconds, concurrency=50)


def test_client_disconnect_mid_request_is_counted_once(server):
    wall = Stopwatch()
    before = server.samples()
    slow = "/rucio-jupyterlab/test/slow"
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(f"GET /{PREFIX}/test/slow?sleep=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Authorization: token {TOKEN}\r\n\r\n".encode())
        assert wait_for(lambda: sample(server.samples(), IN_PROGRESS, handler=slow, method="GET") == 1)
    assert wait_for(lambda: sample(server.samples(), IN_PROGRESS, handler=slow, method="GET") == 0)
    time.sleep(1.2)  # let the handler run to its end: it must not be counted again
    after = server.samples()
    assert delta(before, after, REQUESTS) == Counter(
        {(("handler", slow), ("method", "GET"), ("status_code", "499")): 1})
    assert delta(before, after, COUNT) == Counter({(("handler", slow), ("method", "GET")): 1})
    assert in_progress_total(after) == 0
    assert_plausible_durations(before, after, wall.seconds)
    assert server.request("GET", f"{PREFIX}/instances").status_code == 200


@pytest.mark.parametrize(("at", "client_status", "counted_status", "exception"), [
    ("prepare", 500, "500", "KeyError"),
    ("verb", 500, "500", "ZeroDivisionError"),
    ("on_finish", 200, "200", "RuntimeError"),
    ("after_flush", 200, "200", "LookupError"),
])
def test_faults_in_handlers(server, at, client_status, counted_status, exception):
    wall = Stopwatch()
    before = server.samples()
    response = server.request("GET", f"{PREFIX}/test/fault?at={at}")
    assert response.status_code == client_status
    fault = "/rucio-jupyterlab/test/fault"
    assert wait_for(lambda: delta(before, server.samples(), REQUESTS))
    after = server.samples()
    assert delta(before, after, REQUESTS) == Counter(
        {(("handler", fault), ("method", "GET"), ("status_code", counted_status)): 1})
    assert delta(before, after, EXCEPTIONS) == Counter(
        {(("exception", exception), ("handler", fault), ("method", "GET")): 1})
    assert in_progress_total(after) == 0
    assert_plausible_durations(before, after, wall.seconds)
    assert server.request("GET", f"{PREFIX}/instances").status_code == 200


def test_hostile_input_creates_no_series_and_leaks_nothing_into_labels(server):
    marker = "HOSTILE"
    hostile = [HTTPRequest(server.url(f"{PREFIX}/{marker}-{i}/x?user={marker}{i}"),
                           headers={**HEADERS, "X-Junk": f"{marker}{i}"}, request_timeout=60)
               for i in range(10_000)]
    hostile += [HTTPRequest(server.url(f"{PREFIX}/instances"), method=m, headers=HEADERS,
                            allow_nonstandard_methods=True, body=b"" if m in ("POST", "PUT", "PROPFIND") else None)
                for m in ("PROPFIND", "BREW", "TRACE", "POST")]
    hostile += [HTTPRequest(server.url(f"{PREFIX}/instances?q={marker}{'x' * 30_000}"),
                            headers={**HEADERS, "X-Big": marker + "y" * 30_000}, request_timeout=60)]
    wall = Stopwatch()
    before = server.samples()
    tally = send_all(hostile, concurrency=50, timeout=240)
    assert sum(tally.values()) == len(hostile)
    raw_paths = [b"/rucio-jupyterlab/\xff\xfe" + marker.encode(),
                 b"/rucio-jupyterlab/instances?x=\xff" + marker.encode()]
    for path in raw_paths:
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token "
                      + TOKEN.encode() + b"\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 ")
    after = server.samples()

    new_series = set(after) - set(before)
    # Only the junk verbs on a real route may add series: method OTHER (405) and POST (405).
    per_method = {"rucio_jupyterlab_http_requests_total", "rucio_jupyterlab_http_requests_created",
                  COUNT, "rucio_jupyterlab_http_request_duration_seconds_sum",
                  "rucio_jupyterlab_http_request_duration_seconds_created", IN_PROGRESS,
                  "rucio_jupyterlab_http_request_failures_total", "rucio_jupyterlab_http_request_failures_created"}
    assert {(name, dict(labels)["handler"], dict(labels)["method"]) for name, labels in new_series} == {
        (name, "/rucio-jupyterlab/instances", method) for name in per_method for method in ("OTHER", "POST")}
    for _, labels in after:
        for value in dict(labels).values():
            assert marker not in value and "\ufffd" not in value and "\xff" not in value
    counted = requests_by(after) - requests_by(before)
    assert counted[("/rucio-jupyterlab/instances", "OTHER", "405")] == 3  # PROPFIND, BREW, TRACE
    assert counted[("/rucio-jupyterlab/instances", "POST", "405")] == 1
    assert counted[("/rucio-jupyterlab/instances", "GET", "200")] == 2  # huge query; raw byte in query
    assert sum(v for (h, _, _), v in counted.items() if marker in h) == 0
    # Junk verbs are the client's doing: they spend no error budget.
    failures = {(dict(labels)["method"], dict(labels)["fault"]): after[name, labels] - before.get((name, labels), 0)
                for name, labels in after if name == "rucio_jupyterlab_http_request_failures_total"
                and dict(labels)["handler"] == "/rucio-jupyterlab/instances"}
    assert {key: n for key, n in failures.items() if n} == {("OTHER", "user"): 3, ("POST", "user"): 1}
    assert failures[("OTHER", "service")] == failures[("POST", "service")] == 0
    assert in_progress_total(after) == 0
    assert_plausible_durations(before, after, wall.seconds, concurrency=50)


def test_metrics_needs_a_token_by_default(server):
    assert requests.get(server.url("metrics"), timeout=10).status_code == 403
    assert requests.get(server.url("metrics"), params={"token": "wrong"}, timeout=10).status_code == 403
    assert requests.get(server.url("metrics"), params={"token": TOKEN}, timeout=10).status_code == 200


def test_only_authenticate_prometheus_false_opens_metrics():
    with JupyterServerProcess(args=["--ServerApp.authenticate_prometheus=False"]) as server:
        assert server.request("GET", f"{PREFIX}/instances").status_code == 200
        response = requests.get(server.url("metrics"), timeout=10)
        # The Rucio routes themselves still need a token.
        assert requests.get(server.url(f"{PREFIX}/instances"), timeout=10).status_code == 403
    assert response.status_code == 200
    assert 'rucio_jupyterlab_http_requests_total{handler="/rucio-jupyterlab/instances"' in response.text


def test_broken_recording_never_breaks_a_request():
    with JupyterServerProcess(rucio_instances=[unreachable_rucio_instance()],
                              extensions={"tests.support.extra_routes_extension": True},
                              env={"RUCIO_METRICS_TEST_BREAK_RECORDING": "1"}) as server:
        instances = server.request("GET", f"{PREFIX}/instances")
        files = server.request("GET", f"{PREFIX}/files")
        crash = server.request("GET", f"{PREFIX}/test/fault?at=verb")
        slow = server.request("GET", f"{PREFIX}/test/slow?sleep=0.01")
        tally = send_all([HTTPRequest(server.url(f"{PREFIX}/instances"), headers=HEADERS)] * 200, concurrency=20)
        log = server.log()
    assert (instances.status_code, instances.json()["instances"][0]["name"]) == (200, "atlas")
    assert files.status_code == 400
    assert crash.status_code == 500
    assert (slow.status_code, slow.json()) == (200, {"slept": True})
    assert tally == Counter({("GET", server.url(f"{PREFIX}/instances"), 200): 200})
    assert log.count("recording a request failed at start") == 1
    assert "Traceback" in log
