"""A real Jupyter server in a child process, on loopback, with a token.

Test equipment (also used by the demo): it gives the server a temporary HOME
(rucio-jupyterlab keeps its cache database there) and config folder, and
enables rucio-jupyterlab and rucio_metrics there (and JupyterLab with
``lab=True``: the Rucio panel, served to a browser at ``lab_url()``). The
environment's other server extensions (JupyterLab, LSP, terminals, the notebook
shims) are off unless ``other_extensions=True`` or ``lab=True``: they take half
of each start, and only tests of the whole route table need them.

    with JupyterServerProcess(base_url="/user/alice/") as server:
        server.request("GET", "rucio-jupyterlab/instances")
        print(server.metrics_text())
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families
from requests import certs

from .child_process import ChildProcess, free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "rucio-metrics-test-token"
# What Prometheus holds for a server with the metrics listener: it reads metrics and opens nothing else.
METRICS_TOKEN = "rucio-metrics-test-metrics-only-token"


def unreachable_rucio_instance(name: str = "atlas", mode: str = "replica") -> dict[str, Any]:
    """A Rucio instance config whose server does not exist (nothing listens on port 9)."""
    if mode == "download":  # rucio-jupyterlab's schema wants a CA bundle there; plain HTTP never uses it
        return {**unreachable_rucio_instance(name), "mode": "download", "rucio_ca_cert": certs.where()}
    return {
        "name": name,
        "display_name": name.upper(),
        "rucio_base_url": "http://127.0.0.1:9",
        "rucio_auth_url": "http://127.0.0.1:9",
        "mode": "replica",
        "destination_rse": "SITE_DISK",
        "rse_mount_path": "/eos/rucio",
    }


# Ours: never turned off as another's (and a test's own ``extensions`` override every default).
UNDER_TEST = {"rucio_jupyterlab", "rucio_jupyterlab.server", "rucio_metrics"}


def other_server_extensions_off(prefix: str = sys.prefix) -> dict[str, bool]:
    """``jpserver_extensions`` turning off the server extensions installed in ``prefix`` besides ours.

    Those are the ones enabled by the files their packages put in ``etc/jupyter/jupyter_server_config.d``.
    """
    found = set()
    for path in sorted((Path(prefix) / "etc" / "jupyter" / "jupyter_server_config.d").glob("*.json")):
        found |= set(json.loads(path.read_text()).get("ServerApp", {}).get("jpserver_extensions", {}))
    return {name: False for name in sorted(found - UNDER_TEST)}


class JupyterServerProcess(ChildProcess):
    """``jupyter server`` with rucio-jupyterlab and rucio_metrics; stopped on exit."""

    name = "jupyter server"

    def __init__(
        self,
        base_url: str = "/",
        rucio_instances: list[dict[str, Any]] | None = None,
        extra_config: dict[str, Any] | None = None,
        extensions: dict[str, bool] | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        python: str | None = None,
        metrics_listener: bool = False,
        python_config: str = "",
        lab: bool = False,
        other_extensions: bool = False,
    ) -> None:
        super().__init__("rucio-metrics-server-", "server.log")
        self.base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
        self.port = free_port()
        # Another environment's Python (python=...) runs with what is installed there, as a user's would.
        others = {} if other_extensions or lab or python is not None else other_server_extensions_off()
        config: dict[str, Any] = {
            "ServerApp": {
                "jpserver_extensions": {
                    **others, "rucio_jupyterlab.server": True, "rucio_metrics": True, **(extensions or {})
                },
            },
            "RucioConfig": {"instances": rucio_instances if rucio_instances is not None else []},
        }
        # With metrics_listener: rucio_metrics' own listener on metrics_port, asking for METRICS_TOKEN.
        self.metrics_port = free_port() if metrics_listener else 0
        self.metrics_token_file = self.root / "metrics-token"
        if metrics_listener:
            config["RucioMetrics"] = {"metrics_port": self.metrics_port,
                                      "metrics_token_file": str(self.metrics_token_file)}
        self.lab = lab
        if lab:
            config["ServerApp"]["jpserver_extensions"]["jupyterlab"] = True
            # JupyterLab's news feed and update check are fetched from outside by the server: off.
            config["LabApp"] = {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}
        for section, values in (extra_config or {}).items():
            config.setdefault(section, {}).update(values)
        self.config = config
        self.python_config = python_config  # jupyter_server_config.py, run in the server's process
        self.args = args or []
        self.env = env or {}
        # None: this venv's Python with the checkout under test on the path; else an
        # environment's own Python, which runs whatever rucio_metrics is installed there.
        self.python = python
        self.session.headers["Authorization"] = f"token {TOKEN}"

    def start(self) -> None:
        home = self.root / "home"
        config_dir = self.root / "config"
        # Temporary files go under HOME too: rucio-jupyterlab's uploads write a rucio.cfg with the
        # user's password, and Rucio's client its token, into the temp folder; clean_up removes HOME.
        tmp = home / "tmp"
        for d in (home, tmp, config_dir, self.root / "notebooks"):
            d.mkdir(exist_ok=True)
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(self.config, indent=2))
        if self.python_config:
            (config_dir / "jupyter_server_config.py").write_text(self.python_config)
        if self.lab:
            # The user's answer to JupyterLab's "get notified about news?" (no): its notice covers the page.
            settings = config_dir / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
            settings.mkdir(parents=True, exist_ok=True)
            (settings / "notification.jupyterlab-settings").write_text(
                json.dumps({"fetchNews": "false", "checkForUpdates": False})
            )
        self.metrics_token_file.write_text(METRICS_TOKEN + "\n")
        self.metrics_token_file.chmod(0o600)  # as the docs' recipe makes it
        env = {
            **os.environ,
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "JUPYTER_CONFIG_DIR": str(config_dir),
            "JUPYTER_DATA_DIR": str(self.root / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.root / "runtime"),
            # The checkout under test, not whatever copy is installed.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            **self.env,
        }
        if self.python is not None:
            env.pop("PYTHONPATH")
            env.pop("VIRTUAL_ENV", None)
        command = [
            self.python or sys.executable, "-m", "jupyter_server",
            "--allow-root", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--ServerApp.base_url={self.base_url}", f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={self.root / 'notebooks'}",
            *self.args,
        ]
        self.start_and_wait(
            command, env, lambda: self.session.get(self.url("api/status"), timeout=2).status_code == 200, 60
        )

    def clean_up(self) -> None:
        # The folder keeps the server's log for a failing test to show; HOME holds its Rucio cache.
        shutil.rmtree(self.root / "home", ignore_errors=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}{path.lstrip('/')}"

    def lab_url(self) -> str:
        """JupyterLab's page (``lab=True``), logging the browser in with the token."""
        return self.url(f"lab?token={TOKEN}")

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A request with the token, to ``path`` relative to base_url."""
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url(path), **kwargs)

    def metrics_listener_url(self) -> str:
        """``/metrics`` of the metrics listener (``metrics_listener=True``)."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics_text(self, **kwargs: Any) -> str:
        response = self.request("GET", "metrics", **kwargs)
        response.raise_for_status()
        return response.text

    def samples(self, prefix: str = "rucio_jupyterlab_") -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample whose name starts with ``prefix``, keyed by (name, labels)."""
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(self.metrics_text())
            for s in family.samples
            if s.name.startswith(prefix)
        }


def wait_for_transfers_to_end(server: JupyterServerProcess, count: int, seconds: float = 90) -> None:
    """Until ``count`` transfers ended on ``server`` in all and none is in progress (its own metrics say)."""
    def ended() -> bool:
        samples = server.samples("rucio_jupyterlab_transfers_")
        done = sum(v for (name, _), v in samples.items() if name == "rucio_jupyterlab_transfers_ended_total")
        running = sum(v for (name, _), v in samples.items() if name == "rucio_jupyterlab_transfers_in_progress")
        return done >= count and running == 0

    server.wait_until(ended, seconds, f"{count} transfers did not end")


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    """The value of one sample from ``JupyterServerProcess.samples``, or None."""
    return samples.get((name, frozenset(labels.items())))
