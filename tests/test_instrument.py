"""Each way a request can end, on a plain Tornado app, with exact sample values."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from prometheus_client import CollectorRegistry
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application

from rucio_metrics.instrument import instrument_app, is_instrumented
from rucio_metrics.metrics import MethodMetrics, Metrics
from rucio_metrics.routes import app_rules

from .support.apps import PREFIX, DetachHandler, OtherHandler, SyncHandler, make_app
from .support.durations import Stopwatch, assert_plausible_durations, registry_samples

REQUESTS = "rucio_jupyterlab_http_requests_total"
DURATION_COUNT = "rucio_jupyterlab_http_request_duration_seconds_count"
DURATION_SUM = "rucio_jupyterlab_http_request_duration_seconds_sum"
IN_PROGRESS = "rucio_jupyterlab_http_requests_in_progress"
EXCEPTIONS = "rucio_jupyterlab_http_exceptions_total"


@pytest.fixture
def app(registry: CollectorRegistry) -> Application:
    app = make_app()
    instrument_app(app, "/", ["rucio-jupyterlab"], Metrics.on(registry))
    return app


@pytest.fixture
def wall() -> Stopwatch:
    """Started before the test's requests: what none of them can have outlasted."""
    return Stopwatch()


def plausible(registry: CollectorRegistry, wall: Stopwatch) -> None:
    """Each request counted on ``registry`` (fresh for the test) took more than 0 and less than the test so far."""
    assert_plausible_durations({}, registry_samples(registry), wall.seconds)


def requests(registry: CollectorRegistry, route: str, method: str, status: str) -> float | None:
    labels = {"handler": f"{PREFIX}/{route}", "method": method, "status_code": status}
    return registry.get_sample_value(REQUESTS, labels)


def count(registry: CollectorRegistry, route: str, method: str = "GET") -> float | None:
    return registry.get_sample_value(DURATION_COUNT, {"handler": f"{PREFIX}/{route}", "method": method})


def in_progress(registry: CollectorRegistry, route: str, method: str = "GET") -> float | None:
    return registry.get_sample_value(IN_PROGRESS, {"handler": f"{PREFIX}/{route}", "method": method})


def all_requests(registry: CollectorRegistry) -> float:
    return sum(
        s.value for m in registry.collect() for s in m.samples if s.name == REQUESTS
    )


async def fetch(client, path: str, **kwargs):  # type: ignore[no-untyped-def]
    kwargs.setdefault("raise_error", False)
    kwargs.setdefault("follow_redirects", False)
    return await client.fetch(path, **kwargs)


async def test_sync_verb(http_server_client, registry, wall):
    response = await fetch(http_server_client, f"{PREFIX}/sync")
    assert response.code == 200
    assert requests(registry, "sync", "GET", "200") == 1
    assert count(registry, "sync") == 1
    assert in_progress(registry, "sync") == 0
    assert all_requests(registry) == 1
    plausible(registry, wall)


async def test_async_verb_is_timed_until_it_really_ends(http_server_client, registry, wall):
    response = await fetch(http_server_client, f"{PREFIX}/async?sleep=0.2")
    assert response.code == 200
    assert requests(registry, "async", "GET", "200") == 1
    seconds = registry.get_sample_value(DURATION_SUM, {"handler": f"{PREFIX}/async", "method": "GET"})
    assert 0.2 <= seconds < 2
    plausible(registry, wall)


async def test_async_verb_behind_authenticated(http_server_client, registry, wall):
    assert (await fetch(http_server_client, f"{PREFIX}/login?user=alice")).code == 200
    assert (await fetch(http_server_client, f"{PREFIX}/login")).code == 302  # GET redirects to login_url
    assert (await fetch(http_server_client, f"{PREFIX}/login", method="POST", body="")).code == 403
    assert requests(registry, "login", "GET", "200") == 1
    assert requests(registry, "login", "GET", "302") == 1
    assert requests(registry, "login", "POST", "403") == 1
    assert count(registry, "login") == 2
    assert count(registry, "login", "POST") == 1
    plausible(registry, wall)


async def test_http_error_in_verb(http_server_client, registry, wall):
    assert (await fetch(http_server_client, f"{PREFIX}/http-error")).code == 404
    assert requests(registry, "http-error", "GET", "404") == 1
    assert requests(registry, "http-error", "GET", "200") is None
    assert registry.get_sample_value(EXCEPTIONS, {"handler": f"{PREFIX}/http-error", "method": "GET",
                                                  "exception": "HTTPError"}) is None
    plausible(registry, wall)


async def test_unhandled_exception(http_server_client, registry, wall):
    assert (await fetch(http_server_client, f"{PREFIX}/crash")).code == 500
    assert requests(registry, "crash", "GET", "500") == 1
    assert registry.get_sample_value(
        EXCEPTIONS, {"handler": f"{PREFIX}/crash", "method": "GET", "exception": "ValueError"}
    ) == 1
    assert in_progress(registry, "crash") == 0
    plausible(registry, wall)


async def test_prepare_rejects_before_the_verb(http_server_client, registry, wall):
    assert (await fetch(http_server_client, f"{PREFIX}/prepare")).code == 400
    assert (await fetch(http_server_client, f"{PREFIX}/prepare?namespace=atlas")).code == 200
    assert requests(registry, "prepare", "GET", "400") == 1
    assert requests(registry, "prepare", "GET", "200") == 1
    assert count(registry, "prepare") == 2
    plausible(registry, wall)


async def test_raise_finish(http_server_client, registry, wall):
    response = await fetch(http_server_client, f"{PREFIX}/finish")
    assert (response.code, response.body) == (200, b"finished early")
    assert requests(registry, "finish", "GET", "200") == 1
    assert all_requests(registry) == 1
    plausible(registry, wall)


async def test_etag_match_is_304(http_server_client, registry, wall):
    first = await fetch(http_server_client, f"{PREFIX}/etag")
    second = await fetch(http_server_client, f"{PREFIX}/etag", headers={"If-None-Match": first.headers["Etag"]})
    assert (first.code, second.code) == (200, 304)
    assert requests(registry, "etag", "GET", "200") == 1
    assert requests(registry, "etag", "GET", "304") == 1
    plausible(registry, wall)


async def test_method_not_allowed(http_server_client, registry, wall):
    assert (await fetch(http_server_client, f"{PREFIX}/sync", method="POST", body="")).code == 405
    assert requests(registry, "sync", "POST", "405") == 1
    plausible(registry, wall)


async def test_unknown_method_is_other(http_server_client, registry, wall):
    response = await fetch(http_server_client, f"{PREFIX}/sync", method="PROPFIND", allow_nonstandard_methods=True)
    assert response.code == 405
    assert requests(registry, "sync", "OTHER", "405") == 1
    plausible(registry, wall)


async def test_unmatched_path_under_prefix_is_not_counted(http_server_client, registry, wall):
    assert (await fetch(http_server_client, f"{PREFIX}/no/such/route?x=1")).code == 404
    assert all_requests(registry) == 0
    labels = {s.labels.get("handler") for m in registry.collect() for s in m.samples}
    assert not any("no/such" in str(label) for label in labels)
    plausible(registry, wall)


async def test_routes_outside_the_prefix_are_untouched(http_server_client, registry, app, wall):
    assert (await fetch(http_server_client, "/other")).code == 200
    assert (await fetch(http_server_client, "/sync-elsewhere")).code == 200
    assert all_requests(registry) == 0
    targets = {rule.matcher.regex.pattern: rule.target for rule in app_rules(app)}
    assert targets["/other$"] is OtherHandler
    assert targets["/sync-elsewhere$"] is SyncHandler  # the same class, instrumented elsewhere, is unchanged
    assert is_instrumented(targets[f"{PREFIX}/sync$"])
    plausible(registry, wall)


async def test_one_class_behind_two_routes(http_server_client, registry, wall):
    await fetch(http_server_client, f"{PREFIX}/sync")
    await fetch(http_server_client, f"{PREFIX}/also-sync")
    await fetch(http_server_client, f"{PREFIX}/also-sync")
    assert requests(registry, "sync", "GET", "200") == 1
    assert requests(registry, "also-sync", "GET", "200") == 2
    plausible(registry, wall)


async def test_instrumenting_again_does_not_double_count(http_server_client, registry, app, wall):
    metrics = Metrics.on(registry)
    assert instrument_app(app, "/", ["rucio-jupyterlab"], metrics) == []
    assert Metrics.on(registry) is metrics
    await fetch(http_server_client, f"{PREFIX}/sync")
    assert requests(registry, "sync", "GET", "200") == 1
    plausible(registry, wall)


async def test_series_exist_at_zero_before_any_request(registry, app):
    assert count(registry, "sync") == 0
    assert count(registry, "sync", "PUT") == 0
    assert in_progress(registry, "login", "POST") == 0
    assert registry.get_sample_value("rucio_jupyterlab_http_instrumented_routes") == 9


async def test_client_disconnect_is_499_and_in_progress_returns_to_zero(
    http_server_client, registry, http_server_port, wall
):
    port = http_server_port[1]
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET {PREFIX}/async?sleep=0.5 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if in_progress(registry, "async") == 1:
                break
        assert in_progress(registry, "async") == 1
    for _ in range(200):
        await asyncio.sleep(0.01)
        if requests(registry, "async", "GET", "499"):
            break
    assert requests(registry, "async", "GET", "499") == 1
    assert in_progress(registry, "async") == 0
    await asyncio.sleep(0.6)  # the handler ends after its sleep: still counted once
    assert all_requests(registry) == 1
    assert count(registry, "async") == 1
    assert (await fetch(http_server_client, f"{PREFIX}/sync")).code == 200
    plausible(registry, wall)


async def test_the_duration_counts_from_the_headers_not_from_when_the_body_arrived(
    http_server_client, registry, http_server_port, wall
):
    # Tornado creates the handler only once the whole body is in; a slow upload's time is the client's wait too.
    reader, writer = await asyncio.open_connection("127.0.0.1", http_server_port[1])
    try:
        writer.write(f"PUT {PREFIX}/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\n".encode())
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.write(b"body")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 200")
    assert count(registry, "sync", "PUT") == 1
    duration = registry.get_sample_value(DURATION_SUM, {"handler": f"{PREFIX}/sync", "method": "PUT"})
    assert 0.45 <= duration < 5  # the wait, less what parsing the headers took; 0.000 without the correction
    plausible(registry, wall)


async def test_a_handler_that_detaches_is_counted_with_the_status_set_so_far(registry, http_server_port, wall):
    # Tornado's detach() marks the request finished and drops the close callback:
    # neither on_finish nor on_connection_close runs afterwards.
    app = Application([(f"{PREFIX}/detach", DetachHandler)])
    instrument_app(app, "/", ["rucio-jupyterlab"], Metrics.on(registry))
    server = HTTPServer(app)
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    client = AsyncHTTPClient(force_instance=True)
    try:
        for status in (200, 200, 418):
            response = await fetch(client, f"http://127.0.0.1:{port}{PREFIX}/detach?status={status}")
            assert (response.code, response.body) == (status, b"detached")
    finally:
        client.close()
        server.stop()
    assert requests(registry, "detach", "GET", "200") == 2
    assert requests(registry, "detach", "GET", "418") == 1
    assert count(registry, "detach") == 3
    assert in_progress(registry, "detach") == 0
    plausible(registry, wall)


async def test_a_failure_while_recording_never_breaks_the_request(
    http_server_client, registry, monkeypatch, caplog, wall
):
    def broken(*args: object) -> None:
        raise RuntimeError("registry is broken")

    monkeypatch.setattr(MethodMetrics, "finished", broken)
    with caplog.at_level(logging.ERROR, logger="rucio_metrics"):
        first = await fetch(http_server_client, f"{PREFIX}/sync")
        second = await fetch(http_server_client, f"{PREFIX}/crash")
    assert (first.code, first.body) == (200, b"sync")
    assert second.code == 500
    failures = [r for r in caplog.records if "recording a request failed" in r.getMessage()]
    assert len(failures) == 1
    plausible(registry, wall)


async def test_a_request_whose_rucio_record_could_not_start_is_still_judged_by_its_status(
    http_server_client, registry, monkeypatch, caplog, wall
):
    def broken() -> None:
        raise RuntimeError("no context")

    monkeypatch.setattr("rucio_metrics.instrument.start_request", broken)
    with caplog.at_level(logging.ERROR, logger="rucio_metrics"):
        crashed = await fetch(http_server_client, f"{PREFIX}/crash")
        refused = await fetch(http_server_client, f"{PREFIX}/http-error")
    assert (crashed.code, refused.code) == (500, 404)

    def failures(route: str, fault: str) -> float | None:
        return registry.get_sample_value("rucio_jupyterlab_http_request_failures_total",
                                         {"handler": f"{PREFIX}/{route}", "method": "GET", "fault": fault})

    assert (failures("crash", "service"), failures("http-error", "user")) == (1.0, 1.0)
    plausible(registry, wall)


@pytest.mark.parametrize("nested", [True, False])
def test_walk_finds_nested_and_flat_rules(registry, nested):
    app = make_app(nested=nested)
    labels = instrument_app(app, "/", ["rucio-jupyterlab"], Metrics.on(registry))
    assert sorted(labels) == sorted(f"{PREFIX}/{r}" for r in [
        "sync", "async", "login", "http-error", "crash", "prepare", "finish", "etag", "also-sync"])


def test_default_host_puts_rules_in_both_routers_and_both_are_instrumented(registry):
    app = make_app(default_host="example.org")
    labels = instrument_app(app, "/", ["rucio-jupyterlab"], Metrics.on(registry))
    handler_rules = [r for r in app_rules(app) if r.matcher.regex.pattern.startswith(PREFIX)]
    assert len(handler_rules) == 18  # each of the 9 routes twice
    assert all(is_instrumented(r.target) for r in handler_rules)
    assert len(set(labels)) == 9
    assert registry.get_sample_value("rucio_jupyterlab_http_instrumented_routes") == 9


def test_base_url_is_not_part_of_the_label(registry):
    app = make_app(base_url="/user/alice/")
    labels = instrument_app(app, "/user/alice/", ["rucio-jupyterlab"], Metrics.on(registry))
    assert f"{PREFIX}/sync" in labels
    assert not any("alice" in label for label in labels)


def test_instrumented_class_keeps_name_module_and_verbs(registry, app):
    target = next(r.target for r in app_rules(app) if r.matcher.regex.pattern == f"{PREFIX}/login$")
    original = target.__mro__[2]
    assert (target.__name__, target.__module__, target.__qualname__) == (
        original.__name__, original.__module__, original.__qualname__)
    assert target.get is original.get and target.post is original.post
    assert "on_finish" not in vars(original)


async def test_histogram_with_configured_buckets(http_server_port, io_loop, wall):
    registry = CollectorRegistry()
    app = make_app()
    instrument_app(app, "/", ["rucio-jupyterlab"], Metrics.on(registry, "histogram", [0.1, 1.0]))
    from tornado.httpserver import HTTPServer
    from tornado.simple_httpclient import SimpleAsyncHTTPClient

    server = HTTPServer(app)
    sock, port = http_server_port
    server.add_socket(sock)
    client = SimpleAsyncHTTPClient()
    try:
        await client.fetch(f"http://127.0.0.1:{port}{PREFIX}/async?sleep=0.15")
        await client.fetch(f"http://127.0.0.1:{port}{PREFIX}/sync")
    finally:
        client.close()
        server.stop()
    labels = {"handler": f"{PREFIX}/async", "method": "GET"}
    bucket = "rucio_jupyterlab_http_request_duration_seconds_bucket"
    assert registry.get_sample_value(bucket, {**labels, "le": "0.1"}) == 0
    assert registry.get_sample_value(bucket, {**labels, "le": "1.0"}) == 1
    assert registry.get_sample_value(bucket, {**labels, "le": "+Inf"}) == 1
    assert registry.get_sample_value(bucket, {"handler": f"{PREFIX}/sync", "method": "GET", "le": "0.1"}) == 1
    plausible(registry, wall)

