"""A real JupyterHub in a child process, on loopback, whose users' servers run both extensions.

Test equipment: JupyterHub with configurable-http-proxy, the dummy
authenticator and the simple local-process spawner. Its state (database,
cookie secret, proxy pid file) and the users' homes live in a temporary
folder. Every single-user server is ``jupyterhub-singleuser`` from this
venv with rucio-jupyterlab and this checkout's rucio_metrics enabled.

Services hold fixed API tokens, each with the role the deploy docs give it:
``ADMIN_TOKEN`` (create users, start servers, call their routes),
``SCRAPE_TOKEN`` (Prometheus: the custom scope rucio_metrics admits at the
servers' metrics, nothing else), ``FLEET_TOKEN`` (the fleet helper: list the
ready servers) and ``HUB_METRICS_TOKEN`` (``read:metrics``, the kind of token
a hub gives a Grafana for ``/hub/metrics`` before rucio_metrics exists).
Every single-user server reads the shared config from ``JUPYTER_CONFIG_PATH``
and its user's own ``~/.jupyter``, which its user can write, as under Zero to
JupyterHub (there the shared config is a system one, below the user's; here
``JUPYTER_CONFIG_PATH`` ranks above it, so for a key both set the shared one wins).

    with JupyterHubProcess() as hub:
        hub.start_servers(["alice", "bob"])
        hub.request("GET", "/user/alice/rucio-jupyterlab/instances")
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from .child_process import ChildProcess, free_port
from .jupyter_server_process import REPO

ADMIN_TOKEN = "rucio-metrics-test-hub-admin-token"
SCRAPE_TOKEN = "rucio-metrics-test-hub-scrape-token"
FLEET_TOKEN = "rucio-metrics-test-hub-fleet-token"
HUB_METRICS_TOKEN = "rucio-metrics-test-hub-read-metrics-token"
# rucio_metrics' default RucioMetrics.hub_metrics_scope, defined by the hub as the docs say.
METRICS_SCOPE = "custom:rucio-metrics:read:metrics"
# The roles the deploy docs give the two tokens Prometheus' side holds.
SCRAPE_SCOPES = [METRICS_SCOPE]
FLEET_SCOPES = ["list:users", "read:servers"]

_CONFIG = """\
import json
settings = json.loads({settings!r})
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = settings["proxy_port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = settings["hub_port"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:%d" % settings["proxy_api_port"]
c.ConfigurableHTTPProxy.auth_token = settings["proxy_auth_token"]
c.ConfigurableHTTPProxy.pid_file = settings["proxy_pid_file"]
c.JupyterHub.db_url = "sqlite:///" + settings["db_file"]
c.JupyterHub.cookie_secret_file = settings["cookie_secret_file"]
c.JupyterHub.pid_file = settings["hub_pid_file"]
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = settings["home_template"]
c.Spawner.cmd = [settings["singleuser"]]
c.Spawner.args = ["--allow-root"]
c.Spawner.environment = settings["environment"]
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.JupyterHub.services = [{{"name": "test-admin", "api_token": settings["admin_token"]}}]
c.JupyterHub.load_roles = [
    {{"name": "test-admin", "scopes": ["admin:users", "admin:servers", "access:servers", "tokens"],
      "services": ["test-admin"]}},
]
"""

# The Prometheus services and roles as the deploy docs give them, with the test's fixed tokens.
_PROMETHEUS_SERVICES = """\
c.JupyterHub.custom_scopes = {
    settings["metrics_scope"]: {"description": "Read the metrics of every single-user server, nothing else."},
}
c.JupyterHub.services.extend([
    {"name": "prometheus", "api_token": settings["scrape_token"]},
    {"name": "prometheus-fleet", "api_token": settings["fleet_token"]},
    {"name": "grafana", "api_token": settings["hub_metrics_token"]},
])
c.JupyterHub.load_roles.extend([
    {"name": "prometheus", "scopes": settings["scrape_scopes"], "services": ["prometheus"]},
    {"name": "prometheus-fleet", "scopes": settings["fleet_scopes"], "services": ["prometheus-fleet"]},
    {"name": "grafana", "scopes": ["read:metrics"], "services": ["grafana"]},
    {"name": "metrics-readers", "scopes": settings["scrape_scopes"], "users": settings["metrics_readers"]},
])
"""


class JupyterHubProcess(ChildProcess):
    """``jupyterhub`` with its proxy on 127.0.0.1 random ports; stopped (servers too) on exit."""

    name = "jupyterhub"
    stop_seconds = 30.0

    def __init__(self, server_options: dict[str, Any] | None = None, metrics_readers: Iterable[str] = (),
                 operator_config: str | None = None) -> None:
        """``server_options``: RucioMetrics options of every single-user server; ``metrics_readers``:
        users granted the metrics scope (whose tokens can then be made, and revoked, by a test);
        ``operator_config``: the hub admin's own lines (a docs page's) in place of the test's Prometheus
        services, roles and custom scope, run from ``jupyterhub_config.py`` in ``root``."""
        super().__init__("rucio-metrics-hub-", "hub.log")
        self.port = free_port()  # the proxy's public port: everything goes through here
        self.server_options = dict(server_options or {})
        self.metrics_readers = list(metrics_readers)
        self.operator_config = operator_config
        self.session.headers["Authorization"] = f"token {ADMIN_TOKEN}"

    @property
    def url(self) -> str:
        """The hub's public URL (its proxy)."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        config_dir = self.root / "server-config"
        config_dir.mkdir()
        # Every single-user server reads this: both extensions on, no Rucio instance configured.
        (config_dir / "jupyter_server_config.json").write_text(json.dumps({
            "ServerApp": {"jpserver_extensions": {"rucio_jupyterlab.server": True, "rucio_metrics": True}},
            "RucioConfig": {"instances": []},
            "RucioMetrics": self.server_options,
        }))
        settings = {
            "proxy_port": self.port,
            "hub_port": free_port(),
            "proxy_api_port": free_port(),
            "proxy_auth_token": "rucio-metrics-test-proxy-token",
            "proxy_pid_file": str(self.root / "proxy.pid"),
            "hub_pid_file": str(self.root / "hub.pid"),
            "db_file": str(self.root / "jupyterhub.sqlite"),
            "cookie_secret_file": str(self.root / "cookie_secret"),
            "home_template": str(self.root / "home" / "{username}"),
            "singleuser": str(Path(sys.executable).parent / "jupyterhub-singleuser"),
            "environment": {
                # A system-wide config beside each user's own ~/.jupyter, which the user can write.
                "JUPYTER_CONFIG_PATH": str(config_dir),
                # The checkout under test, not whatever copy is installed.
                "PYTHONPATH": str(REPO),
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            },
            "admin_token": ADMIN_TOKEN,
            "scrape_token": SCRAPE_TOKEN,
            "fleet_token": FLEET_TOKEN,
            "hub_metrics_token": HUB_METRICS_TOKEN,
            "metrics_scope": METRICS_SCOPE,
            "scrape_scopes": SCRAPE_SCOPES,
            "fleet_scopes": FLEET_SCOPES,
            "metrics_readers": self.metrics_readers,
        }
        config_file = self.root / "jupyterhub_config.py"
        prometheus = _PROMETHEUS_SERVICES if self.operator_config is None else self.operator_config
        config_file.write_text(_CONFIG.format(settings=json.dumps(settings)) + prometheus)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "CONFIGPROXY"))}
        self.start_and_wait([sys.executable, "-m", "jupyterhub", "-f", str(config_file)], env,
                            lambda: self.api("GET", "").status_code == 200, 60)

    def clean_up(self) -> None:
        """The hub stops its servers and its proxy; stop anything left of them, then remove the folder."""
        for pid in self._child_pids():
            _kill(pid)
        super().clean_up()

    def _child_pids(self) -> list[int]:
        """The proxy's and the single-user servers' pids, as the hub recorded them."""
        pids = []
        pid_file = self.root / "proxy.pid"
        if pid_file.exists():
            try:
                pids.append(int(pid_file.read_text().strip()))
            except ValueError:
                pass
        db = self.root / "jupyterhub.sqlite"
        if db.exists():
            with sqlite3.connect(db) as conn:
                for (state,) in conn.execute("SELECT state FROM spawners"):
                    pid = json.loads(state or "{}").get("pid")
                    if pid:
                        pids.append(int(pid))
        return pids

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A Hub REST API call, as the admin service."""
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, f"{self.url}hub/api/{path.lstrip('/')}", **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A request through the proxy to ``path`` (e.g. ``/user/alice/metrics``), as the admin service."""
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, f"{self.url}{path.lstrip('/')}", **kwargs)

    def home(self, name: str) -> Path:
        """``name``'s home folder, where their server runs and reads ``~/.jupyter``."""
        return self.root / "home" / name

    def create_token(self, name: str, scopes: list[str] | None = None) -> tuple[str, str]:
        """A new API token of user ``name`` (with ``scopes``, else the user's defaults): ``(id, token)``."""
        body: dict[str, Any] = {"note": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        response = self.api("POST", f"users/{quote(name, safe='')}/tokens", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"creating a token of {name} answered {response.status_code}: {response.text}")
        model = response.json()
        return str(model["id"]), str(model["token"])

    def revoke_token(self, name: str, token_id: str) -> None:
        response = self.api("DELETE", f"users/{quote(name, safe='')}/tokens/{token_id}")
        if response.status_code != 204:
            raise RuntimeError(f"revoking a token of {name} answered {response.status_code}: {response.text}")

    def create_users(self, names: Iterable[str]) -> None:
        response = self.api("POST", "users", json={"usernames": list(names)})
        if response.status_code not in (201, 409):
            raise RuntimeError(f"creating users answered {response.status_code}: {response.text}")

    def start_servers(self, names: Iterable[str]) -> None:
        """Create the users and start their default servers (in parallel); wait until all are ready."""
        names = list(names)
        self.create_users(names)
        for name in names:
            response = self.api("POST", f"users/{quote(name, safe='')}/server")
            if response.status_code not in (201, 202):
                raise RuntimeError(f"starting {name}'s server answered {response.status_code}: {response.text}")
        for name in names:
            self.wait_until(
                lambda name=name: self.user(name)["servers"].get("", {}).get("ready"),
                90, f"{name}'s server did not become ready",
            )

    def stop_server(self, name: str) -> None:
        """Stop ``name``'s default server; wait until the hub has no server for them."""
        response = self.api("DELETE", f"users/{quote(name, safe='')}/server")
        if response.status_code not in (202, 204):
            raise RuntimeError(f"stopping {name}'s server answered {response.status_code}: {response.text}")
        self.wait_until(lambda: not self.user(name)["servers"], 60, f"{name}'s server did not stop")

    def server_address(self, name: str) -> str:
        """``host:port`` where ``name``'s default server listens itself (what pod discovery would find)."""
        with sqlite3.connect(self.root / "jupyterhub.sqlite") as conn:
            [(ip, port)] = conn.execute(
                "SELECT servers.ip, servers.port FROM spawners JOIN servers ON spawners.server_id = servers.id"
                " JOIN users ON spawners.user_id = users.id WHERE users.name = ? AND spawners.name = ''",
                (name,),
            ).fetchall()
        return f"{ip or '127.0.0.1'}:{port}"

    def user(self, name: str) -> dict[str, Any]:
        """The hub's model of user ``name``."""
        return dict(self.api("GET", f"users/{quote(name, safe='')}").json())


def write_token_files(folder: Path) -> tuple[Path, Path]:
    """The fleet and scrape tokens in files named as the docs name them, readable by their owner only."""
    fleet, scrape = folder / "jupyterhub-fleet-token", folder / "jupyterhub-scrape-token"
    for path, token in ((fleet, FLEET_TOKEN), (scrape, SCRAPE_TOKEN)):
        path.write_text(token + "\n")
        path.chmod(0o600)
    return fleet, scrape


def _kill(pid: int) -> None:
    """Terminate ``pid`` if it is still a proxy or a single-user server; kill it after 10 s."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"jupyterhub-singleuser" not in command and b"configurable-http-proxy" not in command:
        return  # gone, and the pid now belongs to someone else
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
