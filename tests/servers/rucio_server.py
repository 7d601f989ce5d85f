"""A real Rucio server (PyPI ``rucio``, the server package) in a child process, on loopback.

Test equipment (also used by the demo). The server package and rucio-clients
(which rucio-jupyterlab needs) both install the ``rucio`` module, so the server
lives in its own virtual environment, ``.venv-rucio``, set up by
``scripts/bootstrap-rucio-server`` (``scripts/bootstrap`` calls it; so does
``start()`` when it has not run). Each server gets a temporary folder with its
rucio.cfg, an SQLite database, its storage (posix RSEs) and its log, a free
port, and Flask's own server; it is seeded with the fixture data of
``rucio_server_setup.py`` through Rucio's own client. No Rucio daemons run:
a rule that needs a transfer stays ``REPLICATING`` (``finish_transfer`` plays
the transfer, ``fail_transfer`` its failure). Passwords are made up per server and never printed or logged.

    with RucioServer() as rucio:
        print(rucio.version)                          # what GET /ping says
        instance = rucio.instance_config("atlas")     # for c.RucioConfig.instances
        body = rucio.userpass_credentials("atlas")    # for PUT rucio-jupyterlab/auth
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..support.rucio_standin import rucio_instance
from .child_process import ChildProcess, free_port
from .jupyter_server_process import REPO
from .rucio_server_setup import ACCOUNT, DESTINATION_RSE, USERNAME

VENV = REPO / ".venv-rucio"
SET_UP = REPO / "scripts" / "bootstrap-rucio-server"
STEPS = Path(__file__).with_name("rucio_server_setup.py")

# Flask's (werkzeug's) access log line: `127.0.0.1 - - [date] "GET /path HTTP/1.1" 200 -`, maybe
# with terminal colours (werkzeug adds them even when writing to a file).
COLOURS = re.compile(r"\x1b\[[0-9;]*m")
ACCESS_LINE = re.compile(r'^127\.0\.0\.1 - - \[[^\]]+\] "(\w+) (\S+) HTTP/[\d.]+" (\d{3}) ')


class Secret(str):
    """A password: its repr never shows it (pytest prints the arguments of a failed assertion)."""

    def __repr__(self) -> str:
        return "'<secret>'"


def rucio_python() -> Path:
    """The Python of Rucio's virtual environment, set up first if needed (quick when it is)."""
    done = subprocess.run([str(SET_UP)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{SET_UP.name} failed:\n{done.stdout}{done.stderr}")
    return VENV / "bin" / "python"


class RucioServer(ChildProcess):
    """``flask run`` of Rucio's REST API with a fresh SQLite database and the fixture data; stopped on exit."""

    name = "rucio server"

    def __init__(self) -> None:
        super().__init__("rucio-metrics-rucio-", "rucio.log")
        self.port = free_port()
        self.password = Secret(secrets.token_urlsafe(18))
        self.root_password = Secret(secrets.token_urlsafe(18))
        self.version = ""
        self.config_path = self.root / "rucio.cfg"
        self._steps: subprocess.Popen[str] | None = None
        self._steps_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._write_config()
        try:
            # The server starts while the schema is made: it opens the database on its first query.
            self._spawn_server()
            self._set_up("database")
            self._wait_for_ping()
            self._set_up("seed", str(self.root / "storage"))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self._end_steps()
        super().stop()

    def serve(self) -> None:
        """Start the REST server again (its database kept); wait until ``GET /ping`` answers."""
        self._spawn_server()
        self._wait_for_ping()

    def _spawn_server(self) -> None:
        command = [
            str(VENV / "bin" / "flask"), "--app", "rucio.web.rest.flaskapi.v1.main:application",
            "run", "--host", "127.0.0.1", "--port", str(self.port), "--no-reload", "--no-debugger",
        ]
        self.spawn(command, self._env(), append=True)  # a restart keeps the access log so far

    def _wait_for_ping(self) -> None:
        def ping() -> bool:
            response = self.session.get(f"{self.url}/ping", timeout=2)
            self.version = response.json()["version"]
            return response.status_code == 200

        self.wait_until(ping, 60, f"{self.name} did not answer GET /ping")

    def halt(self) -> None:
        """Stop the REST server but keep its folder and database: ``serve()`` brings it back."""
        self.terminate()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The REST server answers nothing while the block runs (SIGSTOP): calls to it wait, as on a slow
        Rucio; then it answers them all (SIGCONT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def storage(self, rse: str) -> Path:
        """The folder of an RSE's files (its posix protocol's prefix)."""
        return self.root / "storage" / rse

    def finish_transfer(self, rse: str, dids: list[str]) -> None:
        """Mark the replicas of ``dids`` (``scope:name`` of files) on ``rse`` available, as a transfer would."""
        self._set_up("finish-transfer", rse, *dids)

    def fail_transfer(self, rse: str, dids: list[str]) -> None:
        """Mark the replicas of ``dids`` on ``rse`` unavailable, as a failed transfer would: their rules get STUCK."""
        self._set_up("fail-transfer", rse, *dids)

    def add_file(self, rse: str, did: str, content: bytes, on_disk: bytes | None = None) -> Path:
        """Register ``did`` with a replica on ``rse`` with ``content``'s size and checksums; write the file.

        What is written at the replica's path is ``content``, or ``on_disk`` (a corrupt replica); the
        path is returned.
        """
        self._set_up("add-file", rse, did, str(len(content)),
                     f"{zlib.adler32(content) & 0xFFFFFFFF:08x}", hashlib.md5(content).hexdigest())
        path = self.replica_path(rse, did)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if on_disk is None else on_disk)
        return path

    def replica_path(self, rse: str, did: str) -> Path:
        """Where Rucio's ``hash`` lfn2pfn algorithm puts ``did``'s file on ``rse``."""
        scope, name = did.split(":")
        digest = hashlib.md5(did.encode()).hexdigest()
        if scope.startswith(("user.", "group.")):
            scope = scope.replace(".", "/")  # user.alice -> user/alice
        return self.storage(rse) / scope / digest[0:2] / digest[2:4] / name

    def did_bytes(self, did: str) -> int:
        """The size Rucio holds for file ``did`` (-1 when it does not know the DID)."""
        return int(self._set_up("did-bytes", did).split()[-1])

    def set_limit(self, rse: str, size: int) -> None:
        """Set the user account's quota on ``rse``, in bytes."""
        self._set_up("set-limit", rse, str(size))

    def set_admin(self, admin: bool) -> None:
        """Give the user account the ``admin`` attribute (the seed does), or take it: Rucio holds admins to no quota."""
        self._set_up("set-admin", "yes" if admin else "no")

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # Rucio's venv, nothing else
        return {**env, "RUCIO_CONFIG": str(self.config_path), **extra}

    def _set_up(self, step: str, *args: str) -> str:
        """Run a step of rucio_server_setup.py in the server's one process for them; return what it printed.

        The process starts with the first step and ends with the server; what Rucio logs goes to the log.
        """
        with self._steps_lock:
            if self._steps is None:
                with open(self.log_path, "ab") as log:
                    self._steps = subprocess.Popen(
                        [str(rucio_python()), str(STEPS)], env=self._env(RUCIO_USER_PASSWORD=self.password),
                        cwd=self.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                    )
            steps = self._steps  # stop() may take it from another thread meanwhile
            assert steps.stdin is not None and steps.stdout is not None
            try:
                steps.stdin.write(json.dumps([step, *args]) + "\n")
                steps.stdin.flush()
                answer = steps.stdout.readline()
            except (BrokenPipeError, ValueError):  # ValueError: stop() closed the pipes meanwhile
                answer = ""
        if not answer:
            raise RuntimeError(f"{self.name}: the set-up steps' process ended before {step!r}:\n{self.log()[-6000:]}")
        done = json.loads(answer)
        if "failed" in done:
            raise RuntimeError(f"{self.name}: set-up step {step!r} failed:\n{done['failed'][-6000:]}")
        return str(done["printed"])

    def _end_steps(self) -> None:
        # Not under the lock: a step that hangs (on a stopped server) holds it, and the kill below ends it.
        steps, self._steps = self._steps, None
        if steps is not None:
            assert steps.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                steps.stdin.close()  # the end of its input: it exits
            try:
                steps.wait(5)  # at once, but in a step that hangs
            except subprocess.TimeoutExpired:
                steps.kill()
                steps.wait(10)
            if steps.stdout is not None:
                steps.stdout.close()

    def _write_config(self) -> None:
        (package,) = glob.glob(str(VENV / "lib" / "python*" / "site-packages" / "rucio"))
        database = f"sqlite:///{self.root / 'rucio.db'}"
        alembic = self.root / "alembic.ini"
        alembic.write_text(f"""\
[alembic]
sqlalchemy.url = {database}
script_location = {package}/db/sqla/migrate_repo/

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic

[formatter_generic]
format = %%(levelname)s [%%(name)s] %%(message)s
""")
        (self.root / "logs").mkdir()
        config = f"""\
[common]
logdir = {self.root / 'logs'}
loglevel = WARNING

# No [core] geoip_licence_key: sorting replicas by distance then downloads nothing.

[database]
default = {database}

[alembic]
cfg = {alembic}

[bootstrap]
userpass_identity = root
userpass_pwd = {self.root_password}
userpass_email = root@example.org
x509_identity =
gss_identity =
ssh_identity =

[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = hash
support = root@example.org

[client]
rucio_host = {self.url}
auth_host = {self.url}
auth_type = userpass
username = root
password = {self.root_password}
account = root
request_retries = 0
auth_token_file_path = {self.root / 'client-token' / 'auth_token_for_account_root'}
"""
        self.config_path.touch(mode=0o600)
        self.config_path.write_text(config)

    # -- what tests use ---------------------------------------------------------

    def instance_config(self, name: str, mode: str = "replica", **extra: Any) -> dict[str, Any]:
        """An entry for ``c.RucioConfig.instances`` whose Rucio server is this one."""
        # Where the destination RSE's files are, so paths are those of the real files.
        mount = self.storage(DESTINATION_RSE)
        return rucio_instance(self.url, name, mode, DESTINATION_RSE, str(mount), len(mount.parts) - 1, **extra)

    def userpass_credentials(self, namespace: str, password: str | None = None) -> dict[str, Any]:
        """The body of ``PUT rucio-jupyterlab/auth`` that logs in as the fixture's user."""
        return {
            "namespace": namespace,
            "type": "userpass",
            "params": {
                "username": USERNAME, "account": ACCOUNT,
                "password": Secret(self.password if password is None else password),
            },
        }

    def access_log(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every request the server logged so far, in order."""
        return [
            (m.group(1), m.group(2), int(m.group(3)))
            for m in map(ACCESS_LINE.match, COLOURS.sub("", self.log()).splitlines()) if m
        ]

