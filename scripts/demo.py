"""The demo: a real Jupyter server with rucio-jupyterlab and rucio_metrics on
loopback, its Rucio instances served by a real Rucio server (tests/servers/rucio_server.py:
PyPI's rucio with an SQLite database, seeded with a few datasets), real requests
to the Rucio routes, a replica-mode wait for data played end to end (make-available, the
panel's polls of the did route, the transfer's end, and the rucio_jupyterlab_time_to_data_*
series it left), then the
rucio_jupyterlab_http_*, rucio_jupyterlab_rucio_* and
rucio_jupyterlab_transfer* series (after a real download and a real upload)
from the server's own /metrics endpoint, and inbound against outbound latency per route. When the
`prometheus` binary is present (scripts/bootstrap installs it), a real
Prometheus runs the shipped deploy/prometheus/jupyter-server.yml against the
server's metrics listener with its metrics-only token, and PromQL results follow
the raw series."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers.jupyter_server_process import METRICS_TOKEN, JupyterServerProcess, wait_for_transfers_to_end
from tests.servers.prometheus_process import PrometheusProcess
from tests.servers.rucio_server import RucioServer
from tests.servers.rucio_server_setup import DATASETS, DESTINATION_RSE
from tests.support.deploy_files import deploy_config

# What the demo asks Prometheus, once it has scraped the server after the requests.
QUERIES = [
    "sum by (handler, status_code) (rucio_jupyterlab_http_requests_total)",
    "sum by (rucio_instance, operation, outcome) (rucio_jupyterlab_rucio_requests_total)",
    "sum by (rucio_instance, direction, outcome) (rucio_jupyterlab_transfers_ended_total)",
    "sum by (rucio_instance, mode, outcome) (rucio_jupyterlab_time_to_data_seconds_count)",
]
# The transfers the demo starts: a download of this DID (instance cms is in download mode) and an upload.
DOWNLOAD_DID = "user.alice:demo-download.root"
DOWNLOAD_BYTES = 50_000
UPLOAD_BYTES = 12_345
# The wait for data the demo plays in replica mode (instance atlas): a dataset whose files are on tape only,
# so the rule on the hub's RSE waits for a transfer, which the demo ends with Rucio's own calls.
WAIT_SCOPE, WAIT_NAME = "data18", "RAW.dataset"
POLL_SECONDS = 0.2  # between two polls of the did route (the panel polls every few seconds)
TIME_TO_DATA = "rucio_jupyterlab_time_to_data_"
SHOWN = {TIME_TO_DATA + name for name in ("make_available_total", "seconds_bucket", "seconds_count", "seconds_sum",
                                          "waits")}

# The Rucio-backed routes the demo calls, with the RucioAPI call each makes.
SIDE_BY_SIDE = [
    ("GET", "/rucio-jupyterlab/list-scopes", "atlas", "get_scopes"),
    ("GET", "/rucio-jupyterlab/list-rses", "atlas", "get_rses"),
    ("GET", "/rucio-jupyterlab/did-search", "atlas", "search_did"),
    ("GET", "/rucio-jupyterlab/files", "atlas", "get_replicas"),
    ("GET", "/rucio-jupyterlab/did", "cms", "get_files"),
    ("POST", "/rucio-jupyterlab/did/make-available", "atlas", "add_replication_rule"),
    ("GET", "/rucio-jupyterlab/open-replication-rule", "atlas", "get_rules"),
]


def main() -> None:
    with RucioServer() as rucio:
        instances = [rucio.instance_config("atlas"), rucio.instance_config("cms", mode="download")]
        with JupyterServerProcess(base_url="/user/alice/", rucio_instances=instances, metrics_listener=True,
                                  other_extensions=True) as server:
            print(f"Jupyter server with rucio-jupyterlab and rucio_metrics at {server.url('')}")
            print(f"Rucio server {rucio.version} (PyPI rucio, SQLite) for instances atlas (replica mode) "
                  f"and cms (download mode) at {rucio.url}")
            with prometheus_for(server) as prometheus:
                if prometheus is not None:
                    print(f"Prometheus at {prometheus.url} scraping it with deploy/prometheus/jupyter-server.yml")
                print()
                drive(server, rucio)
                wait_for_data(server, rucio)
                transfer(server, rucio)
                sent = time.time()
                metrics = server.metrics_text()
                if prometheus is not None:
                    prometheus.wait_for_scrapes_after(sent)
                    results = {query: prometheus.query(query) for query in QUERIES}
    print(f"\nrucio_jupyterlab_http_*, rucio_jupyterlab_rucio_* and rucio_jupyterlab_transfer* series from GET "
          f"{server.base_url}metrics "
          "(zero series left out):\n")
    for line in metrics.splitlines():
        if line.startswith(("rucio_jupyterlab_http_", "rucio_jupyterlab_rucio_", "rucio_jupyterlab_transfer")) \
                and "_created" not in line \
                and not line.endswith(" 0.0"):
            print("  " + line)
    print("\nInbound (the route, as the browser waits for it) against outbound (the Rucio call it makes), "
          "mean per request:\n")
    print_side_by_side(metrics)
    if prometheus is None:
        print("\n(no `prometheus` binary on PATH: scripts/bootstrap installs Debian's package)")
        return
    for query, result in results.items():
        print(f"\nPrometheus, after its next scrape: {query}\n")
        for series in sorted(result, key=lambda r: sorted(r["metric"].items())):
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(series["metric"].items()))
            print(f"  {{{labels}}} {series['value'][1]}")


@contextlib.contextmanager
def prometheus_for(server: JupyterServerProcess) -> Iterator[PrometheusProcess | None]:
    """A Prometheus scraping ``server``'s metrics listener every second with its metrics-only token."""
    if shutil.which("prometheus") is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="rucio-metrics-demo-") as tmp:
        token_file = Path(tmp) / "metrics-token"
        token_file.write_text(METRICS_TOKEN)
        target = {"targets": [f"127.0.0.1:{server.metrics_port}"]}
        with PrometheusProcess(deploy_config("jupyter-server.yml", token_file, static_configs=[target])) as prometheus:
            yield prometheus


def drive(server: JupyterServerProcess, rucio: RucioServer) -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "rucio-jupyterlab/instances", {}),
        ("PUT", "rucio-jupyterlab/instances", {"json": {"instance": "atlas", "auth": "userpass"}}),
        ("GET", "rucio-jupyterlab/upload/jobs", {}),
        ("PUT", "rucio-jupyterlab/auth", {"json": rucio.userpass_credentials("atlas")}),
        ("PUT", "rucio-jupyterlab/auth", {"json": rucio.userpass_credentials("cms")}),
        ("GET", "rucio-jupyterlab/list-scopes?namespace=atlas", {}),
        ("GET", "rucio-jupyterlab/list-rses?namespace=atlas", {}),
        ("GET", "rucio-jupyterlab/did-search?namespace=atlas&did=data18:*", {}),
        ("GET", "rucio-jupyterlab/files?namespace=atlas&did=data18:AOD.dataset", {}),
        ("GET", "rucio-jupyterlab/did?namespace=cms&did=data18:AOD.dataset", {}),
        ("GET", "rucio-jupyterlab/open-replication-rule?namespace=atlas&did=data18:AOD.dataset", {}),
        ("GET", "rucio-jupyterlab/file-browser?namespace=atlas&path=", {}),
        ("GET", "rucio-jupyterlab/upload/jobs/details?namespace=atlas&id=nope", {}),
    ]
    for method, path, kwargs in calls:
        show(server, method, path, **kwargs)
    show(server, "GET", "rucio-jupyterlab/list-rses?namespace=atlas&expression=SITE_*",
         note="(Rucio: 400, invalid RSE expression)")


def wait_for_data(server: JupyterServerProcess, rucio: RucioServer) -> None:
    """A user's wait in replica mode, as the panel sees it; then the time-to-data series it left."""
    did = f"{WAIT_SCOPE}:{WAIT_NAME}"
    print(f"\nTime to data in replica mode: {did} made available on {DESTINATION_RSE} (its files are on tape); "
          "the panel polls until they are there:\n")
    start = time.monotonic()
    show(server, "POST", "rucio-jupyterlab/did/make-available?namespace=atlas", json={"did": did},
         note="(Rucio: a new rule)")
    made = time.monotonic()
    poll_did(server, did, "REPLICATING")
    rucio.finish_transfer(DESTINATION_RSE, [f"{WAIT_SCOPE}:{name}" for name in DATASETS[WAIT_NAME]])
    print(f"  (Rucio: the transfer of its {len(DATASETS[WAIT_NAME])} files to {DESTINATION_RSE} ended "
          f"{time.monotonic() - made:.3f} s after the make-available answered)")
    poll_did(server, did, "OK")
    waited = time.monotonic() - start
    print(f"\n{TIME_TO_DATA}* series of atlas after it (the demo's own clock: {waited:.3f} s from sending the "
          "make-available to the answer that showed every file OK):\n")
    for family in text_string_to_metric_families(server.metrics_text()):
        for sample in family.samples:
            if sample.labels.get("rucio_instance") != "atlas" or sample.name not in SHOWN:
                continue
            if sample.name.endswith("_bucket") and sample.labels["le"] != "1800.0":
                continue  # the objective's bound ("within 30 minutes") stands for the others
            if sample.value or sample.name == TIME_TO_DATA + "waits":  # the waits gauge back at 0 is the point
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                print(f"  {sample.name}{{{labels}}} {sample.value}")
    print()


def poll_did(server: JupyterServerProcess, did: str, status: str, seconds: float = 30) -> None:
    """Poll the did route as the panel does until every file of ``did`` shows ``status``."""
    path = f"rucio-jupyterlab/did?namespace=atlas&did={did}&poll=1"
    deadline, polls = time.monotonic() + seconds, 0
    while True:
        response = server.request("GET", path)
        polls += 1
        statuses = [file["status"] for file in response.json()] if response.ok else []
        if statuses and set(statuses) == {status}:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"GET {path}: {statuses or response.status_code}, not {status}, after {seconds:g} s")
        time.sleep(POLL_SECONDS)
    print(f"  GET  {server.base_url}{path:75} -> {response.status_code} {', '.join(statuses)} "
          f"(poll {polls})")


def transfer(server: JupyterServerProcess, rucio: RucioServer) -> None:
    """A download of a real file from the Rucio server's storage, and an upload of one to it, both waited for."""
    rucio.add_file("SITE_DISK", DOWNLOAD_DID, b"d" * DOWNLOAD_BYTES)
    show(server, "POST", "rucio-jupyterlab/did/make-available?namespace=cms", json={"did": DOWNLOAD_DID},
         note=f"(a download of {DOWNLOAD_BYTES:,} bytes)")
    upload = server.root / "notebooks" / "demo-upload.txt"
    upload.write_bytes(b"u" * UPLOAD_BYTES)
    show(server, "POST", "rucio-jupyterlab/upload?namespace=cms",
         json={"file_paths": [str(upload)], "rse": "SITE_DISK", "scope": "user.alice"},
         note=f"(an upload of {UPLOAD_BYTES:,} bytes)")
    wait_for_transfers_to_end(server, 2)


def show(server: JupyterServerProcess, method: str, path: str, note: str = "", **kwargs: Any) -> None:
    status = server.request(method, path, allow_redirects=False, **kwargs).status_code
    print(f"  {method:4} {server.base_url}{path:75} -> {status} {note}".rstrip())


def print_side_by_side(metrics: str) -> None:
    sums: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name.endswith(("_sum", "_count")):
                sums[(s.name, frozenset(s.labels.items()))] = s.value

    def mean_ms(name: str, **labels: str) -> str:
        count = sums.get((name + "_count", frozenset(labels.items())), 0.0)
        total = sums.get((name + "_sum", frozenset(labels.items())), 0.0)
        return f"{1000 * total / count:8.1f}" if count else "       -"

    print(f"  {'route':45} {'inbound ms':>10}   {'rucio operation':28} {'outbound ms':>11}")
    for method, route, instance, operation in SIDE_BY_SIDE:
        inbound = mean_ms("rucio_jupyterlab_http_request_duration_seconds", handler=route, method=method)
        outbound = mean_ms("rucio_jupyterlab_rucio_request_duration_seconds", instance=instance, operation=operation)
        print(f"  {method + ' ' + route:45} {inbound:>10}   {instance + ' ' + operation:28} {outbound:>11}")


if __name__ == "__main__":
    main()
