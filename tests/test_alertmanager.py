"""Alerts delivered: the shipped alert rules in a real Prometheus, a real Alertmanager with the
shipped example routing, and a webhook receiver on loopback.

A real Jupyter server's Rucio instance points at the Rucio stand-in, which
answers 500s: ``list-scopes`` fails for the service's reasons,
``RucioJupyterLabHighErrorRatio`` fires and reaches the receiver its
``severity`` routes to, with its labels and annotations (the runbook link
expanded by Prometheus from the runbook rule); then Rucio recovers, successful
requests bring the error ratio under 5 %, and the resolution arrives too.

To stay bounded in time, only timings change: scrapes and rule evaluations
every second, every alert's ``for:`` 1 s instead of minutes, and
Alertmanager's ``group_wait``/``group_interval`` 1 s. The rules' expressions,
labels and annotations are the shipped ones.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import rucio_metrics

from .servers.alertmanager_process import AlertmanagerProcess, WebhookReceiver
from .servers.jupyter_server_process import TOKEN, JupyterServerProcess
from .servers.prometheus_process import PrometheusProcess
from .support.deploy_files import DEPLOY, RULE_FILES, deploy_config, load_yaml, rules
from .support.rucio_standin import RucioStandIn, userpass_credentials

ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
LIST_SCOPES = "rucio-jupyterlab/list-scopes?namespace=atlas"
HANDLER = "/rucio-jupyterlab/list-scopes"
ALERT = "RucioJupyterLabHighErrorRatio"
# This release's runbook, its section on the alert.
RUNBOOK = f"https://github.com/rucio/rucio-metrics/blob/v{rucio_metrics.__version__}/docs/runbook.md"


def amtool(*args: str) -> str:
    result = subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_amtool_checks_the_shipped_config() -> None:
    output = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert "SUCCESS" in output and "3 receivers" in output


@pytest.mark.parametrize(("labels", "receiver"), [
    ("severity=warning", "jupyterhub-operators"),
    ("severity=critical", "on-call"),
    ("alertname=Other", "default"),
])
def test_the_shipped_routes_follow_severity(labels: str, receiver: str) -> None:
    output = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", labels)
    assert output.split() == [receiver]


def test_every_shipped_alert_has_a_routed_severity() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert alerts and {rule["labels"]["severity"] for rule in alerts} <= {"warning", "critical"}


def quick_alert_rules(directory: Path) -> list[str]:
    """The shipped rule files, every alert's ``for:`` set to 1 s; the rest as shipped."""
    paths = []
    for path in RULE_FILES:
        groups = load_yaml(path)
        for group in groups["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = "1s"
        copy_path = directory / path.name
        copy_path.write_text(yaml.safe_dump(groups, sort_keys=False))
        paths.append(str(copy_path))
    return paths


def quick_alertmanager_config(webhook: WebhookReceiver) -> dict[str, Any]:
    """The shipped Alertmanager config, every webhook sent to ``webhook`` and grouping waits at 1 s."""
    config = copy.deepcopy(load_yaml(ALERTMANAGER_CONFIG))
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook.url + receiver["name"]
    return config


class Setup:
    def __init__(self, server: JupyterServerProcess, rucio: RucioStandIn, prometheus: PrometheusProcess,
                 webhook: WebhookReceiver) -> None:
        self.server, self.rucio, self.prometheus, self.webhook = server, rucio, prometheus, webhook

    def list_scopes(self, times: int, status: int) -> None:
        for _ in range(times):
            got = self.server.request("GET", LIST_SCOPES).status_code
            assert got == status


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("alerts")
    with RucioStandIn() as rucio, WebhookReceiver() as webhook:
        with JupyterServerProcess(base_url="/user/alice/", rucio_instances=[rucio.instance_config("atlas")]) as server:
            active = {"instance": "atlas", "auth": "userpass"}
            assert server.request("PUT", "rucio-jupyterlab/instances", json=active).ok
            assert server.request("PUT", "rucio-jupyterlab/auth", json=userpass_credentials("atlas")).ok
            with AlertmanagerProcess(quick_alertmanager_config(webhook)) as alertmanager:
                token_file, targets_file = tmp / "token", tmp / "targets.json"
                token_file.write_text(TOKEN)
                targets_file.write_text(json.dumps([{
                    "targets": [f"127.0.0.1:{server.port}"],
                    "labels": {"__metrics_path__": f"{server.base_url}metrics", "instance": "alice", "user": "alice"},
                }]))
                config = deploy_config("jupyterhub-fleet.yml", token_file, file_sd=targets_file)
                config["rule_files"] = quick_alert_rules(tmp)
                alertmanagers = [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]
                config["alerting"] = {"alertmanagers": alertmanagers}
                with PrometheusProcess(config) as prometheus:
                    prometheus.wait_for_targets(1)
                    yield Setup(server, rucio, prometheus, webhook)


def test_an_alert_fires_reaches_its_receiver_and_resolves(setup: Setup) -> None:
    # Successes first, so the route's 200 series exists before the failures.
    setup.list_scopes(3, 200)
    setup.rucio.fail("GET /scopes/", 500)
    # A {status_code="500"} series is born at its first request; rate() needs it to grow after a scrape.
    setup.list_scopes(1, 500)
    setup.prometheus.wait_for_scrapes_after(time.time())
    setup.list_scopes(2, 500)

    firing = setup.webhook.wait_for(lambda a: a["labels"]["alertname"] == ALERT and a["status"] == "firing")
    assert firing["receiver"] == "jupyterhub-operators"  # routed by severity="warning"
    assert firing["labels"] == {"alertname": ALERT, "severity": "warning", "job": "jupyterhub-singleuser",
                                "handler": HANDLER}
    annotations = firing["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["summary"] == "A Rucio JupyterLab route fails for the service's reasons."
    assert f"Rucio JupyterLab route {HANDLER}" in annotations["description"]
    assert "(job jupyterhub-singleuser) failed for the service's reasons" in annotations["description"]
    assert annotations["runbook_url"] == f"{RUNBOOK}#ruciojupyterlabhigherrorratio"
    # A link back to the expression in the Prometheus that evaluated it.
    assert f":{setup.prometheus.port}/graph?g0.expr=job_handler%3Arucio_jupyterlab_http_request_errors" in (
        firing["generatorURL"])

    # Rucio recovers; successes bring the route's 5xx share under 5 %.
    setup.rucio.reset()
    setup.list_scopes(150, 200)
    resolved = setup.webhook.wait_for(lambda a: a["labels"]["alertname"] == ALERT and a["status"] == "resolved")
    assert resolved["labels"] == firing["labels"]
    assert resolved["receiver"] == "jupyterhub-operators"
    assert resolved["startsAt"] == firing["startsAt"] and resolved["endsAt"] > resolved["startsAt"]
