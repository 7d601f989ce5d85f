"""A real JupyterHub in a child process, on loopback, whose users' servers run both extensions.

Test equipment: JupyterHub with configurable-http-proxy, the dummy
authenticator and the simple local-process spawner. Its state (database,
cookie secret, proxy pid file) and the users' homes live in a temporary
folder. Every single-user server is ``jupyterhub-singleuser`` from this
venv with rucio-jupyterlab and this checkout's rucio_metrics enabled.

Two services hold fixed API tokens: ``ADMIN_TOKEN`` (create users, start
servers, call their routes) and ``PROMETHEUS_TOKEN``, whose role has only the
scopes the deploy docs ask for (list:users, read:servers, read:metrics).

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
PROMETHEUS_TOKEN = "rucio-metrics-test-hub-prometheus-token"
# The role the deploy docs ask for: list the servers and read their metrics, nothing else.
PROMETHEUS_SCOPES = ["list:users", "read:servers", "read:metrics"]

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
c.JupyterHub.services = [
    {{"name": "test-admin", "api_token": settings["admin_token"]}},
    {{"name": "prometheus", "api_token": settings["prometheus_token"]}},
]
c.JupyterHub.load_roles = [
    {{"name": "test-admin", "scopes": ["admin:users", "admin:servers", "access:servers"],
      "services": ["test-admin"]}},
    {{"name": "prometheus", "scopes": settings["prometheus_scopes"], "services": ["prometheus"]}},
]
"""


class JupyterHubProcess(ChildProcess):
    """``jupyterhub`` with its proxy on 127.0.0.1 random ports; stopped (servers too) on exit."""

    name = "jupyterhub"
    stop_seconds = 30.0

    def __init__(self) -> None:
        super().__init__("rucio-metrics-hub-", "hub.log")
        self.port = free_port()  # the proxy's public port: everything goes through here
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
                "JUPYTER_CONFIG_DIR": str(config_dir),
                # The checkout under test, not whatever copy is installed.
                "PYTHONPATH": str(REPO),
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            },
            "admin_token": ADMIN_TOKEN,
            "prometheus_token": PROMETHEUS_TOKEN,
            "prometheus_scopes": PROMETHEUS_SCOPES,
        }
        config_file = self.root / "jupyterhub_config.py"
        config_file.write_text(_CONFIG.format(settings=json.dumps(settings)))
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
