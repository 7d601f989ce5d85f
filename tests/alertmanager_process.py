"""A real Alertmanager in a child process, and a webhook receiver for what it sends; both on loopback.

Test equipment: Debian's ``prometheus-alertmanager`` on a random 127.0.0.1
port with ``config`` (a dict, e.g. the shipped example made to send to the
receiver), clustering off, temporary storage; stopped on exit.

    with WebhookReceiver() as webhook, AlertmanagerProcess(config) as alertmanager:
        webhook.wait_for(lambda n: n["status"] == "firing")
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

from .child_process import ChildProcess, free_port


class AlertmanagerProcess(ChildProcess):
    """``prometheus-alertmanager`` on 127.0.0.1 with ``config``; stopped on exit."""

    name = "alertmanager"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__("rucio-metrics-alertmanager-", "alertmanager.log")
        self.config = config
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        config_file = self.root / "alertmanager.yml"
        config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        command = [
            "prometheus-alertmanager",
            f"--config.file={config_file}",
            f"--storage.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no gossip port: a single Alertmanager
        ]
        self.start_and_wait(
            command, dict(os.environ),
            lambda: self.session.get(self.url + "-/ready", timeout=2).status_code == 200, 30,
        )


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 keeping every JSON document POSTed to it (Alertmanager's webhook)."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, match: Callable[[dict[str, Any]], bool], seconds: float = 60) -> dict[str, Any]:
        """The first alert (with its notification's ``status`` and ``receiver``) that ``match`` accepts."""
        deadline = time.monotonic() + seconds
        while True:
            with self._lock:
                alerts = [
                    {**alert, "receiver": n["receiver"], "notification_status": n["status"]}
                    for n in self.notifications for alert in n["alerts"]
                ]
            for alert in alerts:
                if match(alert):
                    return alert
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching alert within {seconds:.0f} s; received: {alerts}")
            time.sleep(0.2)
