"""Users' mistakes spend no error budget, a Rucio outage does: a real Rucio, a real server, a real Prometheus.

A real Rucio server (tests/servers/rucio_server.py) behind a Jupyter server
with rucio-jupyterlab and rucio_metrics, scraped every second by a real
Prometheus running the shipped jupyter-server.yml with the shipped rules.
First a user works and makes the mistakes users make every day, with Rucio
healthy: a DID that does not exist, a scope that does not exist, an invalid
RSE expression (upstream answers 500), a wrong password saved and then used
(401, then 500s), a certificate path or a search filter refused before any
request leaves, a malformed DID or body, an upload job that does not exist.
Every error-budget series stays at 0 and no alert's condition holds; the
users' mistakes are counted apart. Then the Rucio server stops and the same
work fails: the error-budget series rise and the page's condition
(``RucioJupyterLabRoutesErrorBudgetBurn``, and the calls'
``RucioJupyterLabRucioErrorBudgetBurn``) is true.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .servers.jupyter_server_process import METRICS_TOKEN, JupyterServerProcess
from .servers.prometheus_process import PrometheusProcess
from .servers.rucio_server import RucioServer
from .support.deploy_files import RULE_FILES, deploy_config

# Every series an error budget reads: each must stay 0 while only users make mistakes.
BUDGET_SERIES = [
    "job:rucio_jupyterlab_http_request_errors:rate5m",
    "job:rucio_jupyterlab_rucio_request_errors:rate5m",
    "job_handler:rucio_jupyterlab_http_request_errors:ratio_rate5m",
    "job_rucio_instance_operation:rucio_jupyterlab_rucio_request_errors:ratio_rate5m",
    "job:rucio_jupyterlab_http_request_errors:burnrate5m",
    "job:rucio_jupyterlab_rucio_request_errors:burnrate5m",
    "job:rucio_jupyterlab_http_request_errors:burnrate1h",
    "job:rucio_jupyterlab_rucio_request_errors:burnrate1h",
]


def alerts() -> dict[str, str]:
    """``{alert name: expression}`` of the shipped alert rules."""
    return {rule["alert"]: rule["expr"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


@dataclass
class Hub:
    rucio: RucioServer
    server: JupyterServerProcess
    prometheus: PrometheusProcess

    def get(self, route: str, status: int, **params: str) -> int:
        """GET a route; ``status`` 5 means any 5xx."""
        got = self.server.request("GET", f"rucio-jupyterlab/{route}", params=params).status_code
        assert got == status or (status == 5 and got >= 500), (route, params, got)
        return got

    def put_auth(self, status: int, namespace: str = "atlas", password: str | None = None) -> None:
        body = self.rucio.userpass_credentials(namespace, password=password)
        assert self.server.request("PUT", "rucio-jupyterlab/auth", json=body).status_code == status

    def values(self, expr: str) -> list[float]:
        return [float(r["value"][1]) for r in self.prometheus.query(expr)]

    def wait_for(self, expr: str, seconds: float = 30) -> None:
        """Wait until ``expr`` has a result: what was sent has gone through the scrape and every rule group."""
        self.prometheus.wait_until(lambda: self.prometheus.query(expr), seconds, f"no result for {expr}")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder: Path = tmp_path_factory.mktemp("budget")
    token = folder / "token"
    token.write_text(METRICS_TOKEN)
    with RucioServer() as rucio:
        instances = [rucio.instance_config("atlas"), rucio.instance_config("cms", mode="download")]
        with JupyterServerProcess(base_url="/user/alice/", rucio_instances=instances, metrics_listener=True) as server:
            assert server.request("PUT", "rucio-jupyterlab/instances",
                                  json={"instance": "atlas", "auth": "userpass"}).ok
            targets = [{"targets": [f"127.0.0.1:{server.metrics_port}"]}]
            with PrometheusProcess(deploy_config("jupyter-server.yml", token, static_configs=targets)) as prometheus:
                hub = Hub(rucio, server, prometheus)
                hub.put_auth(200)
                hub.put_auth(200, "cms")
                yield hub


def ordinary_work(hub: Hub, status: int = 200) -> None:
    hub.get("list-scopes", status, namespace="atlas")
    hub.get("did-search", status, namespace="atlas", did="data18:*", type="collection")


def test_users_mistakes_spend_no_error_budget_and_fire_nothing(hub: Hub) -> None:
    # Spread over several scrapes, as a user's work is: a user-fault series is born at its
    # first mistake, and rate() sees the ones after.
    for _ in range(5):
        ordinary_work(hub)
        hub.get("did", 404, namespace="cms", did="data18:no-such-dataset", force="1")  # Rucio: not found
        hub.get("did-search", 404, namespace="atlas", did="nosuchscope:*", type="collection")  # unknown scope
        hub.get("list-rses", 500, namespace="atlas", expression="SITE_*")  # invalid expression: upstream's 500
        hub.put_auth(401, password="a-wrong-guess")  # Rucio: 401
        hub.get("list-scopes", 500, namespace="atlas")  # with the wrong password stored: upstream's 500
        # Refused before anything reaches Rucio: a certificate path that does not exist, a search
        # filter that does not parse; and requests the routes fail on (upstream's 500s): a DID
        # without ":", a body without "did", an upload job that does not exist.
        x509 = {"namespace": "atlas", "type": "x509",
                "params": {"certificate": "/no/such/cert.pem", "key": "/no/such/key.pem"}}
        assert hub.server.request("PUT", "rucio-jupyterlab/auth", json=x509).status_code == 401
        hub.get("did-search", 500, namespace="atlas", did="data18:*", filters="junk")
        hub.get("did", 500, namespace="atlas", did="no-colon")
        assert hub.server.request("POST", "rucio-jupyterlab/did/make-available", params={"namespace": "atlas"},
                                  json={"dids": []}).status_code == 500
        hub.get("upload/jobs/details", 500, namespace="atlas", id="999999")
        hub.put_auth(200)
        hub.prometheus.wait_for_scrapes_after(time.time())
    # The mistakes are counted, apart: 5 x (404, 404, 500, 401, 500, 401, 500, 500, 500, 500) on the
    # routes, down to the last rule that reads them (so every rule group has seen all of this traffic).
    hub.wait_for('sum(rucio_jupyterlab_http_request_failures_total{fault="user"}) == 50')
    hub.wait_for('sum(rucio_jupyterlab_rucio_requests_total{outcome="invalid_input"}) == 10')
    hub.wait_for("job:rucio_jupyterlab_http_user_mistakes:rate5m > 0 "
                 "and job:rucio_jupyterlab_rucio_user_mistakes:rate5m > 0")
    hub.prometheus.wait_for_rule_evaluation_after(time.time())
    assert hub.values('sum(rucio_jupyterlab_http_request_failures_total{fault="service"})') == [0.0]
    assert hub.values("job:rucio_jupyterlab_http_requests:rate5m")[0] > 0
    for series in BUDGET_SERIES:
        # 0, or NaN for a route without any request (0 of 0)
        assert {v for v in hub.values(series) if not math.isnan(v)} <= {0.0}, series
    # No alert's condition holds (their `for:` aside): nothing would fire, however long this went on.
    for name, expr in alerts().items():
        assert hub.prometheus.query(expr) == [], name


def test_a_rucio_outage_spends_the_budget_and_pages(hub: Hub) -> None:
    # After the test above: the same work, with the Rucio server gone.
    hub.rucio.halt()
    try:
        for i in range(40):
            ordinary_work(hub, status=5)
            if i % 10 == 9:  # an outage lasts: over several scrapes (a connection_error series is born at 1)
                hub.prometheus.wait_for_scrapes_after(time.time())
        hub.wait_for('sum(rucio_jupyterlab_http_request_failures_total{fault="service"}) == 80')
        hub.wait_for("job:rucio_jupyterlab_http_request_errors:rate5m > 0 "
                     "and job:rucio_jupyterlab_rucio_request_errors:rate5m > 0")
        hub.prometheus.wait_for_rule_evaluation_after(time.time())
        conditions = alerts()
        for name in ("RucioJupyterLabRoutesErrorBudgetBurn", "RucioJupyterLabRucioErrorBudgetBurn"):
            fired = hub.prometheus.query(conditions[name])
            assert [r["metric"]["job"] for r in fired] == ["jupyter"], name
    finally:
        hub.rucio.serve()
