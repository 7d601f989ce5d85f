"""End to end: a real Jupyter server with the real rucio-jupyterlab, metrics read over HTTP."""

from __future__ import annotations

import platform
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version

import pytest
import requests

import rucio_metrics

from .servers.jupyter_server_process import JupyterServerProcess, sample, unreachable_rucio_instance
from .support.durations import Stopwatch, assert_plausible_durations

REQUESTS = "rucio_jupyterlab_http_requests_total"
COUNT = "rucio_jupyterlab_http_request_duration_seconds_count"
IN_PROGRESS = "rucio_jupyterlab_http_requests_in_progress"
CREDENTIALS = {"namespace": "atlas", "type": "userpass", "params": {"username": "u", "password": "p", "account": "a"}}

# (method, path, expected status) in the order sent; every one is a Rucio route.
TRAFFIC = [
    ("GET", "rucio-jupyterlab/instances", 200),
    ("GET", "rucio-jupyterlab/instances", 200),
    ("PUT", "rucio-jupyterlab/instances", 200),
    ("GET", "rucio-jupyterlab/auth", 400),             # missing query arguments
    ("GET", "rucio-jupyterlab/files", 400),            # prepare(): no ?namespace=
    ("GET", "rucio-jupyterlab/files?namespace=atlas", 401),  # prepare(): no credentials yet
    ("PUT", "rucio-jupyterlab/auth", 401),             # stores credentials; the Rucio login fails
    ("GET", "rucio-jupyterlab/file-browser?namespace=atlas&path=", 200),
    ("GET", "rucio-jupyterlab/upload/jobs?namespace=atlas", 200),
    ("GET", "rucio-jupyterlab/upload/jobs?namespace=atlas", 200),
]
BODIES = {("PUT", "rucio-jupyterlab/instances"): {"instance": "atlas", "auth": "userpass"},
          ("PUT", "rucio-jupyterlab/auth"): CREDENTIALS}


@dataclass
class Traffic:
    """A server after TRAFFIC, and the seconds that traffic took."""

    server: JupyterServerProcess
    seconds: float


@pytest.fixture(scope="module", params=["/", "/user/alice/"], ids=["root", "jupyterhub-base-url"])
def traffic(request: pytest.FixtureRequest) -> Iterator[Traffic]:
    with JupyterServerProcess(base_url=request.param, rucio_instances=[unreachable_rucio_instance()],
                              other_extensions=True) as server:
        with Stopwatch() as wall:
            for method, path, expected in TRAFFIC:
                response = server.request(method, path, json=BODIES.get((method, path.split("?")[0])))
                assert response.status_code == expected, (method, path, response.text)
            # Not logged in: jupyter_server's prepare() answers 403 before any rucio code runs.
            assert requests.get(server.url("rucio-jupyterlab/instances"), timeout=10).status_code == 403
        yield Traffic(server, wall.seconds)


@pytest.fixture(scope="module")
def server(traffic: Traffic) -> JupyterServerProcess:
    return traffic.server


def test_every_request_is_counted_once_with_the_status_the_client_got(server):
    samples = server.samples()
    expected = {
        ("/rucio-jupyterlab/instances", "GET", "200"): 2,
        ("/rucio-jupyterlab/instances", "GET", "403"): 1,
        ("/rucio-jupyterlab/instances", "PUT", "200"): 1,
        ("/rucio-jupyterlab/auth", "GET", "400"): 1,
        ("/rucio-jupyterlab/auth", "PUT", "401"): 1,
        ("/rucio-jupyterlab/files", "GET", "400"): 1,
        ("/rucio-jupyterlab/files", "GET", "401"): 1,
        ("/rucio-jupyterlab/file-browser", "GET", "200"): 1,
        ("/rucio-jupyterlab/upload/jobs", "GET", "200"): 2,
    }
    counted = {
        (labels["handler"], labels["method"], labels["status_code"]): value
        for (name, frozen), value in samples.items() if name == REQUESTS for labels in [dict(frozen)]
    }
    assert counted == expected


def test_summary_counts_and_in_progress(traffic):
    samples = traffic.server.samples()
    assert sample(samples, COUNT, handler="/rucio-jupyterlab/instances", method="GET") == 3
    assert sample(samples, COUNT, handler="/rucio-jupyterlab/files", method="GET") == 2
    assert sample(samples, COUNT, handler="/rucio-jupyterlab/upload/jobs", method="GET") == 2
    assert sample(samples, COUNT, handler="/rucio-jupyterlab/did", method="GET") == 0  # exists at zero
    in_progress = [v for (name, _), v in samples.items() if name == IN_PROGRESS]
    assert in_progress and all(v == 0 for v in in_progress)
    assert sample(samples, "rucio_jupyterlab_http_instrumented_routes") == 16
    # Every request of the traffic took some time, and the log-in's call to Rucio too; none longer than it.
    grown = assert_plausible_durations({}, samples, traffic.seconds)
    assert {family: events for family, (events, _) in grown.items()} == {
        "rucio_jupyterlab_http_request_duration_seconds": len(TRAFFIC) + 1,
        "rucio_jupyterlab_rucio_request_duration_seconds": 1,
    }


def test_handler_label_is_the_route_template_whatever_the_base_url(server):
    handlers = {dict(labels).get("handler") for (name, labels) in server.samples() if name == COUNT}
    assert len(handlers) == 16
    assert all(h.startswith("/rucio-jupyterlab/") for h in handlers)
    assert "/rucio-jupyterlab/did/make-available" in handlers
    assert not any("alice" in h or "?" in h or "atlas" in h for h in handlers)


def test_jupyter_servers_own_metric_and_upstream_metrics_are_unchanged(server):
    text = server.metrics_text()
    assert re.search(r'http_request_duration_seconds_count\{handler="rucio_jupyterlab\.handlers\.instances\.'
                     r'InstancesHandler",method="GET",status_code="200"\} 2\.0', text)
    assert re.search(r"^rucio_jupyterlab_requests_total \d", text, re.M)
    assert "# TYPE rucio_jupyterlab_request_latency_seconds summary" in text


def test_build_info_names_the_versions_the_server_runs(server):
    # The server runs in this test's environment: the same distributions, the same Python.
    samples = server.samples("rucio_metrics_")
    assert list(samples.values()) == [1.0]
    [(name, labels)] = samples
    assert name == "rucio_metrics_build_info"
    assert dict(labels) == {
        "version": rucio_metrics.__version__,
        "rucio_jupyterlab_version": version("rucio-jupyterlab"),
        "jupyter_server_version": version("jupyter_server"),
        "python_version": platform.python_version(),
    }


def test_metrics_endpoint_needs_the_token(server):
    assert requests.get(server.url("metrics"), timeout=10).status_code == 403
    ok = requests.get(server.url("metrics"), headers={"Authorization": "Bearer rucio-metrics-test-token"}, timeout=10)
    assert ok.status_code == 200


def test_bad_option_is_logged_and_the_server_serves_everything():
    with JupyterServerProcess(extra_config={"RucioMetrics": {"latency_metric": "histogram", "buckets": [3, 1]}},
                              args=["--RucioMetrics.route_prefixes=['rucio(.*)']"]) as server:
        with Stopwatch() as wall:
            assert server.request("GET", "rucio-jupyterlab/instances").status_code == 200
            assert server.request("GET", "api/status").status_code == 200
        log = server.log()
        assert "invalid option RucioMetrics.buckets = [3, 1]: buckets must be strictly increasing" in log
        assert "invalid option RucioMetrics.route_prefixes" in log and "rucio(.*)" in log
        samples = server.samples()
    assert_plausible_durations({}, samples, wall.seconds)
    bucket = "rucio_jupyterlab_http_request_duration_seconds_bucket"
    assert sample(samples, bucket, handler="/rucio-jupyterlab/instances", method="GET", le="0.005") is not None
    assert sample(samples, REQUESTS, handler="/rucio-jupyterlab/instances", method="GET", status_code="200") == 1


def test_buckets_only_infinite_fall_back_to_the_default_and_the_routes_are_measured():
    # [inf, inf] used to pass the option's check and then fail building the histogram,
    # which switched the whole extension off.
    inf = float("inf")
    with JupyterServerProcess(extra_config={"RucioMetrics": {"latency_metric": "histogram", "buckets": [inf, inf]}}) \
            as server:
        # The scrape is inside the stopwatch: the server records a request's end after its last byte is
        # sent, so a client's clock stopped at the response can end a few microseconds before it.
        with Stopwatch() as wall:
            assert server.request("GET", "rucio-jupyterlab/instances").status_code == 200
            samples = server.samples("rucio_jupyterlab_http_")
        log = server.log()
    assert_plausible_durations({}, samples, wall.seconds)
    assert "invalid option RucioMetrics.buckets = [inf, inf]: buckets must be strictly increasing" in log
    assert "failed to load" not in log
    assert sample(samples, "rucio_jupyterlab_http_instrumented_routes") == 16
    bucket = "rucio_jupyterlab_http_request_duration_seconds_bucket"
    assert sample(samples, bucket, handler="/rucio-jupyterlab/instances", method="GET", le="60.0") == 1


def test_disabled_by_option():
    with JupyterServerProcess(args=["--RucioMetrics.enabled=False"]) as server:
        assert server.request("GET", "rucio-jupyterlab/instances").status_code == 200
        samples = server.samples("rucio_jupyterlab_http_")
        build_info = server.samples("rucio_metrics_")
        assert "disabled by RucioMetrics.enabled = False" in server.log()
    assert samples == {} and build_info == {}


def test_without_the_rucio_extension_instrumented_routes_is_zero():
    with JupyterServerProcess(extensions={"rucio_jupyterlab.server": False}) as server:
        assert server.request("GET", "rucio-jupyterlab/instances").status_code == 404
        samples = server.samples("rucio_jupyterlab_http_")
    assert sample(samples, "rucio_jupyterlab_http_instrumented_routes") == 0
    assert not [k for k in samples if k[0] == REQUESTS]


def test_routes_added_by_an_extension_loading_later_are_instrumented():
    with JupyterServerProcess(extensions={"tests.support.extra_routes_extension": True}) as server:
        with Stopwatch() as wall:
            assert server.request("GET", "rucio-jupyterlab/test/late").status_code == 200
            assert server.request("GET", "rucio-jupyterlab/test/slow?sleep=0.1").status_code == 200
        samples = server.samples()
    assert_plausible_durations({}, samples, wall.seconds)
    assert sample(samples, REQUESTS, handler="/rucio-jupyterlab/test/late", method="GET", status_code="200") == 1
    assert sample(samples, REQUESTS, handler="/rucio-jupyterlab/test/slow", method="GET", status_code="200") == 1
    assert sample(samples, "rucio_jupyterlab_http_instrumented_routes") == 19
