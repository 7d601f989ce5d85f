"""The demo: a real Jupyter server with rucio-jupyterlab and rucio_metrics on
loopback, real requests to the Rucio routes, then the rucio_jupyterlab_http_*
series from the server's own /metrics endpoint and, when the `prometheus`
binary is present, what a real Prometheus running the shipped
deploy/prometheus/jupyter-server.yml (with the server's token) scraped."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.deploy_files import deploy_config
from tests.jupyter_server_process import TOKEN, JupyterServerProcess, unreachable_rucio_instance
from tests.prometheus_process import PrometheusProcess

CREDENTIALS = {"namespace": "atlas", "type": "userpass", "params": {"username": "u", "password": "p", "account": "a"}}
QUERY = "sum by (handler, status_code) (rucio_jupyterlab_http_requests_total)"


@contextlib.contextmanager
def prometheus_for(server: JupyterServerProcess) -> Iterator[PrometheusProcess | None]:
    """A Prometheus scraping ``server`` every second with its token; None without the binary."""
    if shutil.which("prometheus") is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="rucio-metrics-demo-") as tmp:
        token_file = Path(tmp) / "jupyter-token"
        token_file.write_text(TOKEN)
        target = {"targets": [f"127.0.0.1:{server.port}"], "labels": {"__metrics_path__": f"{server.base_url}metrics"}}
        with PrometheusProcess(deploy_config("jupyter-server.yml", token_file, static_configs=[target])) as prometheus:
            yield prometheus


def main() -> None:
    with JupyterServerProcess(base_url="/user/alice/", rucio_instances=[unreachable_rucio_instance()]) as server:
        print(f"Jupyter server with rucio-jupyterlab and rucio_metrics at {server.url('')}")
        with prometheus_for(server) as prometheus:
            if prometheus is not None:
                print(f"Prometheus at {prometheus.url} scraping it with deploy/prometheus/jupyter-server.yml")
            print()
            calls = [
                ("GET", "rucio-jupyterlab/instances", {}),
                ("PUT", "rucio-jupyterlab/instances", {"json": {"instance": "atlas", "auth": "userpass"}}),
                ("GET", "rucio-jupyterlab/auth?namespace=atlas&type=userpass", {}),
                ("GET", "rucio-jupyterlab/files", {}),
                ("PUT", "rucio-jupyterlab/auth", {"json": CREDENTIALS}),
                ("GET", "rucio-jupyterlab/file-browser?namespace=atlas&path=", {}),
                ("GET", "rucio-jupyterlab/upload/jobs?namespace=atlas", {}),
                ("GET", "rucio-jupyterlab/upload/jobs/details?namespace=atlas&id=nope", {}),
            ]
            for method, path, kwargs in calls:
                status = server.request(method, path, **kwargs).status_code
                print(f"  {method:4} {server.base_url}{path:55} -> {status}")
            sent = time.time()
            metrics = server.metrics_text()
            print(f"\nrucio_jupyterlab_http_* series from GET {server.base_url}metrics (zero series left out):\n")
            for line in metrics.splitlines():
                if line.startswith("rucio_jupyterlab_http_") and "_created" not in line and not line.endswith(" 0.0"):
                    print("  " + line)
            if prometheus is None:
                print("\n(no `prometheus` binary on PATH: scripts/bootstrap installs Debian's package)")
                return
            prometheus.wait_for_scrapes_after(sent)
            print(f"\nPrometheus, after its next scrape: {QUERY}\n")
            for result in sorted(prometheus.query(QUERY), key=lambda r: sorted(r["metric"].items())):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(result["metric"].items()))
                print(f"  {{{labels}}} {result['value'][1]}")


if __name__ == "__main__":
    main()
