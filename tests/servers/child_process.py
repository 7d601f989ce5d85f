"""The part every test service in a child process shares: a temporary folder,
a log file, waiting until it is ready, and stopping it for sure."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml

_Child = TypeVar("_Child", bound="ChildProcess")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChildProcess:
    """A program run by ``start()`` in a child process; use it as a context manager."""

    name = "child process"
    stop_seconds = 10.0

    def __init__(self, prefix: str, log_name: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.log_path = self.root / log_name
        self.process: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only, never through an HTTP proxy

    def __enter__(self: _Child) -> _Child:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def spawn(self, command: Sequence[str], env: dict[str, str], append: bool = False) -> None:
        """Start ``command`` in ``root``, its output into the log (after what it holds, with ``append``)."""
        with open(self.log_path, "ab" if append else "wb") as log:
            self.process = subprocess.Popen(
                list(command), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )

    def wait_until(self, ready: Callable[[], Any], seconds: float, what: str, every: float = 0.1) -> None:
        """Poll ``ready()`` until it is true; raise with the log if the program exits or time runs out.

        Connection errors and half-formed answers while it starts count as not ready.
        """
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()[-6000:]}")
            try:
                if ready():
                    return
            except (requests.ConnectionError, KeyError, ValueError):
                pass
            time.sleep(every)
        raise RuntimeError(f"{what} within {seconds:.0f} s:\n{self.log()[-6000:]}")

    def start_and_wait(self, command: Sequence[str], env: dict[str, str], ready: Callable[[], Any],
                       seconds: float) -> None:
        """``spawn`` then ``wait_until``; stops the program if it never gets ready."""
        self.spawn(command, env)
        try:
            self.wait_until(ready, seconds, f"{self.name} was not ready")
        except BaseException:
            self.stop()
            raise

    def terminate(self) -> None:
        """End the program if it runs: SIGTERM, then SIGKILL after ``stop_seconds``."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.stop_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def stop(self) -> None:
        self.terminate()
        self.session.close()
        self.clean_up()

    def clean_up(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class LoopbackService(ChildProcess):
    """A child process serving HTTP on a free port of 127.0.0.1, configured by a YAML file in its folder."""

    def __init__(self, prefix: str, log_name: str) -> None:
        super().__init__(prefix, log_name)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def write_config(self, name: str, config: dict[str, Any]) -> Path:
        """``config`` as YAML in ``root/name``, keys in their order; the file's path."""
        path = self.root / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path
