"""Zero to JupyterHub's shape for real: each pod's metrics listener, scraped with no credential.

Debian's Prometheus has no Kubernetes discovery, so a file hands the shipped
relabelling (``zero-to-jupyterhub.yml``, and the PodMonitor's endpoint) the
meta labels pod discovery gives KubeSpawner's pods. Each pod is a real Jupyter
server whose listener runs with the options ``z2jh-values.yaml`` mounts
(``singleuser.extraFiles``), read from a JSON config file as in the pod, bound
to a loopback address of its own as a pod has an IP of its own. Two values
differ from a cluster, since the pods share one machine here: the listener's
address (the pod's IP, not every address) and its port (a free one, in the
relabelling too). The network policy that keeps others out is checked in
test_kubernetes.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .servers.child_process import free_port
from .servers.jupyter_server_process import JupyterServerProcess, unreachable_rucio_instance
from .servers.prometheus_process import PrometheusProcess
from .support.deploy_files import (
    POD_LISTENER_PORT,
    PROMETHEUS_DIR,
    Z2JH_VALUES,
    kubernetes_pod_target,
    load_yaml,
    pod_discovery_config,
)
from .support.json_http_server import JSONHTTPServer
from .test_prometheus import start_all

SHIPPED = ["zero-to-jupyterhub.yml", "podmonitor.yaml"]
CREDENTIALS = {"namespace": "atlas", "type": "userpass", "params": {"username": "u", "password": "p", "account": "a"}}


def listener_options() -> dict[str, Any]:
    """The RucioMetrics options the z2jh values mount in every pod."""
    files = load_yaml(Z2JH_VALUES)["singleuser"]["extraFiles"]
    [mounted] = [f for f in files.values() if f["mountPath"].endswith("/jupyter_server_config.json")]
    return dict(mounted["data"]["RucioMetrics"])


@dataclass
class Pods:
    port: int  # every pod's listener port here (POD_LISTENER_PORT in a cluster)
    servers: dict[str, JupyterServerProcess]  # by pod IP


# pod IP: (user, server name, base_url the hub gives the server)
PODS = {
    "127.0.0.2": ("alice", "", "/user/alice/"),
    "127.0.0.3": ("carol", "gpu", "/user/carol/gpu/"),
    # A name the hub escapes, under a hub.baseUrl of /jupyter/: the listener's path is /metrics all the same.
    "127.0.0.4": ("first+last@example.org", "", "/jupyter/user/first%2Blast@example.org/"),
}


@pytest.fixture(scope="module")
def pods() -> Iterator[Pods]:
    port = free_port()
    servers = {}
    for ip, (user, _, base_url) in PODS.items():
        options = {**listener_options(), "metrics_port": port, "metrics_ip": ip}
        rucio = [unreachable_rucio_instance(), unreachable_rucio_instance("cms")] if user == "alice" else []
        servers[ip] = JupyterServerProcess(base_url=base_url, rucio_instances=rucio,
                                           extra_config={"RucioMetrics": options},
                                           extensions={"rucio_jupyterlab.server": user != "carol"})
    try:
        start_all(list(servers.values()))
        alice = servers["127.0.0.2"]
        # Calls to both Rucio instances, so the outbound series (and their instance label) exist.
        for namespace in ("atlas", "cms"):
            stored = alice.request("PUT", "rucio-jupyterlab/auth", json={**CREDENTIALS, "namespace": namespace})
            assert stored.status_code == 401
        yield Pods(port, servers)
    finally:
        for server in servers.values():
            server.stop()


def pod_targets() -> list[dict[str, Any]]:
    targets = [kubernetes_pod_target(ip, user, name) for ip, (user, name, _) in PODS.items()]
    return [
        *targets,
        kubernetes_pod_target("127.0.0.2", "dave", phase="Pending"),  # dropped: not running
        kubernetes_pod_target("127.0.0.2", "erin", port_name="metrics"),  # dropped: another container port
    ]


def test_the_values_turn_on_a_listener_without_a_token_on_every_address() -> None:
    assert listener_options() == {"metrics_port": POD_LISTENER_PORT, "metrics_ip": ""}


@pytest.mark.parametrize("shipped", SHIPPED)
def test_each_pods_listener_is_scraped_with_no_credential(pods: Pods, tmp_path: Path, shipped: str) -> None:
    config = pod_discovery_config(shipped, pod_targets(), tmp_path, pods.port)
    with PrometheusProcess(config) as prometheus:
        prometheus.wait_for_targets(len(PODS))
        targets = prometheus.wait_for_scrapes_after(time.time())
        assert sorted((t["scrapeUrl"], t["health"], t["lastError"]) for t in targets) == sorted(
            (f"http://{ip}:{pods.port}/metrics", "up", "") for ip in PODS
        )
        labels = {t["labels"]["instance"]: t["labels"] for t in targets}
        job = "jupyterhub-singleuser"
        assert labels == {
            "alice": {"instance": "alice", "job": job, "namespace": "jhub", "pod": "jupyter-alice", "user": "alice"},
            "carol/gpu": {"instance": "carol/gpu", "job": job, "namespace": "jhub", "pod": "jupyter-carol--gpu",
                          "user": "carol", "server_name": "gpu"},
            "first+last@example.org": {"instance": "first+last@example.org", "job": job, "namespace": "jhub",
                                       "pod": "jupyter-first+last@example.org", "user": "first+last@example.org"},
        }
        assert prometheus.values("rucio_jupyterlab_http_instrumented_routes", "instance") == {
            ("alice",): 16.0, ("carol/gpu",): 0.0, ("first+last@example.org",): 16.0,
        }
        # The outbound series name the Rucio instance rucio_instance, as in every hub config.
        durations = prometheus.values(
            "count by (instance, rucio_instance) (rucio_jupyterlab_rucio_request_duration_seconds_count)",
            "instance", "rucio_instance",
        )
        assert durations == {("alice", "atlas"): 11.0, ("alice", "cms"): 11.0}
        assert prometheus.query('{exported_instance!=""}') == []


@pytest.mark.parametrize("shipped", SHIPPED)
def test_prometheus_presents_nothing_to_a_pod(tmp_path: Path, shipped: str) -> None:
    # A pod whose server records every request (and answers nothing Prometheus can parse):
    # Prometheus sends no Authorization header at all.
    port = free_port()
    with JSONHTTPServer(lambda path, headers: (200, {}, None), host="127.0.0.5", port=port) as pod:
        config = pod_discovery_config(shipped, [kubernetes_pod_target("127.0.0.5", "mallory")], tmp_path, port)
        with PrometheusProcess(config) as prometheus:
            prometheus.wait_for_targets(1)
            prometheus.wait_until(lambda: len(pod.seen) >= 2, 30, "two scrapes of the recording pod")
    assert {path for path, _ in pod.seen} == {"/metrics"}
    assert [authorization for _, authorization in pod.seen] == [None] * len(pod.seen)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback address (::1) to listen on")
@pytest.mark.parametrize("shipped", SHIPPED)
def test_a_pod_with_an_ipv6_address_is_scraped_at_it(tmp_path: Path, shipped: str) -> None:
    port = free_port()
    options = {**listener_options(), "metrics_port": port, "metrics_ip": "::1"}
    with JupyterServerProcess(extra_config={"RucioMetrics": options}) as server:
        config = pod_discovery_config(shipped, [kubernetes_pod_target("::1", "zoe")], tmp_path, port)
        with PrometheusProcess(config) as prometheus:
            prometheus.wait_for_targets(1)
            [target] = prometheus.wait_for_scrapes_after(time.time())
        assert (target["scrapeUrl"], target["health"]) == (f"http://[::1]:{port}/metrics", "up")
        assert "rucio_jupyterlab_http_instrumented_routes 16.0" in server.metrics_text()


def test_the_scrape_config_reads_no_credential_file() -> None:
    [job] = load_yaml(PROMETHEUS_DIR / "zero-to-jupyterhub.yml")["scrape_configs"]
    assert not {"authorization", "basic_auth", "bearer_token", "bearer_token_file", "oauth2"} & set(job)
