"""The metrics endpoint at Prometheus' spelling of a base_url JupyterHub escaped.

In process (pytest-jupyter's ServerApp) with the base_url JupyterHub gives
the user ``first+last@example.org``; the real hub, proxy and Prometheus do
the same in test_fleet.py.
"""

from __future__ import annotations

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (jp_serverapp, jp_fetch and what they need)
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from rucio_metrics.scrape_path import metrics_path, prometheus_spelling, route_prometheus_spelling

EXTENSIONS = {"rucio_jupyterlab.server": True, "rucio_metrics": True}
BASE_URL = "/user/first%2Blast@example.org/"


@pytest.fixture
def jp_server_config():  # type: ignore[no-untyped-def]
    return Config({"ServerApp": {"jpserver_extensions": dict(EXTENSIONS)}})


@pytest.fixture
def jp_base_url() -> str:
    return BASE_URL


@pytest.mark.parametrize(("path", "sent"), [
    ("/user/alice/metrics", "/user/alice/metrics"),
    ("/user/a%20b/metrics", "/user/a%20b/metrics"),
    ("/user/j%C3%BCrgen/metrics", "/user/j%C3%BCrgen/metrics"),
    ("/user/first%2Blast@example.org/metrics", "/user/first+last@example.org/metrics"),
    ("/user/x%24%26%2C%3A%3B%3D/metrics", "/user/x$&,:;=/metrics"),
    ("/user/it%27s%21/metrics", "/user/it%27s%21/metrics"),  # Go escapes these as Python does
])
def test_prometheus_spelling_is_gos(path: str, sent: str) -> None:
    assert prometheus_spelling(path) == sent


def test_metrics_path() -> None:
    assert metrics_path("/") == "/metrics"
    assert metrics_path("/user/alice/") == "/user/alice/metrics"


async def test_both_spellings_answer_with_the_same_handler(jp_serverapp, http_server_client, jp_auth_header):
    for path in (BASE_URL + "metrics", "/user/first+last@example.org/metrics"):
        response = await http_server_client.fetch(path, headers=jp_auth_header)
        assert response.code == 200, path
        assert b"\nrucio_jupyterlab_http_instrumented_routes " in response.body  # the process's global registry


async def test_the_other_spelling_asks_for_the_same_authentication(jp_serverapp, http_server_client):
    with pytest.raises(HTTPClientError) as refused:
        await http_server_client.fetch("/user/first+last@example.org/metrics")
    assert refused.value.code == 403


async def test_routed_once_and_only_where_needed(jp_serverapp):
    assert route_prometheus_spelling(jp_serverapp.web_app, BASE_URL) is None  # already routed at load
    assert route_prometheus_spelling(jp_serverapp.web_app, "/user/alice/") is None  # the spellings agree
