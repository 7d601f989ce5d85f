"""The demo: a real Jupyter server with rucio-jupyterlab and rucio_metrics on
loopback, real requests to the Rucio routes, then the rucio_jupyterlab_http_*
series from the server's own /metrics endpoint."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.jupyter_server_process import JupyterServerProcess, unreachable_rucio_instance

CREDENTIALS = {"namespace": "atlas", "type": "userpass", "params": {"username": "u", "password": "p", "account": "a"}}


def main() -> None:
    with JupyterServerProcess(base_url="/user/alice/", rucio_instances=[unreachable_rucio_instance()]) as server:
        print(f"Jupyter server with rucio-jupyterlab and rucio_metrics at {server.url('')}\n")
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
        metrics = server.metrics_text()
        print(f"\nrucio_jupyterlab_http_* series from GET {server.base_url}metrics (zero series left out):\n")
        for line in metrics.splitlines():
            if line.startswith("rucio_jupyterlab_http_") and "_created" not in line and not line.endswith(" 0.0"):
                print("  " + line)


if __name__ == "__main__":
    main()
