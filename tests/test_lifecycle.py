"""Lifecycle in one process: load twice, two ServerApps, disabled and enabled again.

These use in-process ServerApps from pytest-jupyter; metrics live on the
process's global registry, so every assertion is on a before/after delta.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import url_path_join
from prometheus_client import REGISTRY, CollectorRegistry
from pytest_jupyter.jupyter_server import *  # noqa: F403  (jp_serverapp, jp_fetch and what they need)
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import RequestHandler
from traitlets.config import Config

import rucio_metrics
from rucio_metrics.extension import load
from rucio_metrics.instrument import is_instrumented
from rucio_metrics.routes import app_rules, rules_under
from rucio_metrics.scrape_path import metrics_path, prometheus_spelling

from .support.durations import Stopwatch, assert_plausible_durations, registry_samples

INSTANCES = {"handler": "/rucio-jupyterlab/instances", "method": "GET", "status_code": "200"}
EXTENSIONS = {"rucio_jupyterlab.server": True, "rucio_metrics": True}


def instances_count() -> float:
    return REGISTRY.get_sample_value("rucio_jupyterlab_http_requests_total", INSTANCES) or 0.0


@pytest.fixture
def jp_server_config():  # type: ignore[no-untyped-def]
    return Config({"ServerApp": {"jpserver_extensions": dict(EXTENSIONS)}})


def rule_patterns(app: ServerApp) -> set[str]:
    return {rule.matcher.regex.pattern for rule in app_rules(app.web_app)}


async def test_loading_twice_neither_raises_nor_double_counts(jp_serverapp, jp_fetch, caplog):
    with caplog.at_level(logging.WARNING):
        rucio_metrics._load_jupyter_server_extension(jp_serverapp)
        rucio_metrics._load_jupyter_server_extension(jp_serverapp)
    assert not [r for r in caplog.records if "rucio_metrics" in r.getMessage()]
    before, samples = instances_count(), registry_samples(REGISTRY)
    with Stopwatch() as wall:
        for _ in range(3):
            assert (await jp_fetch("rucio-jupyterlab", "instances")).code == 200
    assert instances_count() - before == 3
    assert_plausible_durations(samples, registry_samples(REGISTRY), wall.seconds)


async def test_two_server_apps_in_one_process(jp_serverapp, jp_fetch, tmp_path):
    second = ServerApp(config=Config({"ServerApp": {"jpserver_extensions": dict(EXTENSIONS)}}))
    second.initialize(argv=[f"--ServerApp.root_dir={tmp_path}", "--ServerApp.token=second-token",
                            "--ServerApp.allow_root=True"], new_httpserver=False)
    sock, port = bind_unused_port()
    server = HTTPServer(second.web_app)
    server.add_sockets([sock])
    client = AsyncHTTPClient(force_instance=True)
    try:
        assert all(is_instrumented(r.target) for r in app_rules(second.web_app)
                   if r.matcher.regex.pattern.startswith("/rucio-jupyterlab/"))
        before, samples = instances_count(), registry_samples(REGISTRY)
        with Stopwatch() as wall:
            assert (await jp_fetch("rucio-jupyterlab", "instances")).code == 200
            for _ in range(2):
                response = await client.fetch(f"http://127.0.0.1:{port}/rucio-jupyterlab/instances",
                                              headers={"Authorization": "token second-token"})
                assert response.code == 200
        assert instances_count() - before == 3
        assert_plausible_durations(samples, registry_samples(REGISTRY), wall.seconds)
        assert REGISTRY.get_sample_value("rucio_jupyterlab_http_instrumented_routes") == 16
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize("jp_server_config", [
    Config({"ServerApp": {"jpserver_extensions": {**EXTENSIONS, "rucio_metrics": False}}}),
])
async def test_disabled_extension_leaves_routes_alone_then_enabling_counts(jp_serverapp, jp_fetch):
    rucio = [rule for rule, _ in rules_under(jp_serverapp.web_app, jp_serverapp.base_url, ["rucio-jupyterlab"])]
    assert len(rucio) == 16 and not any(is_instrumented(r.target) for r in rucio)
    before = instances_count()
    assert (await jp_fetch("rucio-jupyterlab", "instances")).code == 200
    assert instances_count() == before  # disabled: not counted
    patterns = rule_patterns(jp_serverapp)

    rucio_metrics._load_jupyter_server_extension(jp_serverapp)  # enabled again
    # None removed; the one added is the metrics endpoint at Prometheus' spelling of the
    # escaped base_url pytest-jupyter uses ("/a%40b/" is requested as "/a@b/").
    alias = prometheus_spelling(metrics_path(jp_serverapp.base_url))
    assert jp_serverapp.base_url == "/a%40b/"
    assert rule_patterns(jp_serverapp) - patterns == {re.escape(alias) + "$"}
    assert patterns <= rule_patterns(jp_serverapp)
    assert all(is_instrumented(r.target) for r in rucio)
    samples = registry_samples(REGISTRY)
    with Stopwatch() as wall:
        assert (await jp_fetch("rucio-jupyterlab", "instances")).code == 200
    assert instances_count() - before == 1
    assert_plausible_durations(samples, registry_samples(REGISTRY), wall.seconds)


class LateHandler(RequestHandler):
    def get(self) -> None:
        self.write("late")


async def test_a_second_load_with_new_prefixes_instruments_routes_added_later_under_them(jp_serverapp, caplog):
    # The add_handlers hook used to keep the first load's prefixes, though the log promised otherwise.
    jp_serverapp.config.RucioMetrics.route_prefixes = ["rucio-jupyterlab", "late-extension"]
    try:
        with caplog.at_level(logging.INFO):
            rucio_metrics._load_jupyter_server_extension(jp_serverapp)
        jp_serverapp.web_app.add_handlers(".*$", [(url_path_join(jp_serverapp.base_url, "late-extension/ping"),
                                                   LateHandler)])
    finally:
        del jp_serverapp.config.RucioMetrics["route_prefixes"]
    late = [rule for rule, _ in rules_under(jp_serverapp.web_app, jp_serverapp.base_url, ["late-extension"])]
    assert len(late) == 1 and is_instrumented(late[0].target)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "rucio_metrics" in r.getMessage()]


async def test_a_second_load_warns_for_every_option_it_cannot_change(jp_serverapp, caplog):
    # A fresh registry, so this test fixes the duration type itself: a histogram with two buckets.
    registry = CollectorRegistry()
    config = jp_serverapp.config.RucioMetrics
    config.latency_metric, config.buckets = "histogram", [1, 2]
    try:
        load(jp_serverapp, registry)
        config.buckets = [1, 5]
        config.enabled = True
        config.route_prefixes = ["other"]
        config.outbound_enabled = False
        with caplog.at_level(logging.WARNING):
            load(jp_serverapp, registry)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        config.latency_metric = "summary"
        config.enabled = False
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            load(jp_serverapp, registry)
        more = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    finally:
        for name in ("latency_metric", "buckets", "enabled", "route_prefixes", "outbound_enabled"):
            config.pop(name, None)
        load(jp_serverapp)  # calls to Rucio recorded on the global registry again, as the other tests expect
    assert [w.split(" is ignored")[0].split(" no longer")[0] for w in warnings] == [
        "rucio_metrics: RucioMetrics.route_prefixes",
        "rucio_metrics: RucioMetrics.outbound_enabled = False",
        "rucio_metrics: RucioMetrics.buckets = [1.0, 5.0]",
    ]
    assert "with buckets [1.0, 2.0]" in warnings[2] and "rucio-jupyterlab" in warnings[0]
    assert more == [
        "rucio_metrics: RucioMetrics.enabled = False is ignored for the routes already instrumented: "
        "they stay measured until the server restarts",
    ]


@contextmanager
def loaded_with_a_failure(jp_serverapp: ServerApp, monkeypatch: pytest.MonkeyPatch, target: str
                          ) -> Iterator[CollectorRegistry]:
    """rucio_metrics loaded on a fresh registry while ``target`` raises; loaded on the global one again after."""
    def fail(*args: object) -> None:
        raise RuntimeError(f"{target} failed")

    registry = CollectorRegistry()
    monkeypatch.setattr(target, fail)
    try:
        assert load(jp_serverapp, registry) is not None
        yield registry
    finally:
        monkeypatch.undo()
        load(jp_serverapp)  # the hook back to the global registry


async def test_instrumented_routes_is_exported_even_when_instrumenting_fails(jp_serverapp, caplog, monkeypatch):
    with caplog.at_level(logging.ERROR), \
            loaded_with_a_failure(jp_serverapp, monkeypatch, "rucio_metrics.extension.instrument_app") as registry:
        pass
    # 0 with the server up: the RoutesNotInstrumented alert's condition.
    assert registry.get_sample_value("rucio_jupyterlab_http_instrumented_routes") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "rucio_metrics: instrumenting the routes failed; requests are served unmeasured",
    ]


async def test_the_routes_are_measured_when_the_versions_cannot_be_read(jp_serverapp, jp_fetch, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING), \
            loaded_with_a_failure(jp_serverapp, monkeypatch, "rucio_metrics.build_info.versions") as registry:
        before, samples = instances_count(), registry_samples(REGISTRY)
        with Stopwatch() as wall:
            assert (await jp_fetch("rucio-jupyterlab", "instances")).code == 200
        assert instances_count() - before == 1
        assert_plausible_durations(samples, registry_samples(REGISTRY), wall.seconds)
    # The load went on past the gauge: the calls to Rucio, set up after it, are measured on this registry.
    assert {m.name for m in registry.collect()} >= {"rucio_jupyterlab_http_instrumented_routes",
                                                    "rucio_jupyterlab_rucio_requests"}
    assert registry.get_sample_value("rucio_metrics_build_info") is None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "rucio_metrics: could not export rucio_metrics_build_info",
    ]
