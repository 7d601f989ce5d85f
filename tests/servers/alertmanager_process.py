"""A real Alertmanager in a child process, and a webhook receiver for what it sends; both on loopback.

Test equipment: Debian's ``prometheus-alertmanager`` on a random 127.0.0.1
port with ``config`` (a dict, e.g. the shipped example made to send to the
receiver), clustering off, temporary storage; stopped on exit.

    with WebhookReceiver() as webhook, AlertmanagerProcess(config) as alertmanager:
        webhook.wait_for(lambda n: n["status"] == "firing")
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ..support.json_http_server import JSONHTTPServer
from .child_process import LoopbackService


class AlertmanagerProcess(LoopbackService):
    """``prometheus-alertmanager`` on 127.0.0.1 with ``config``; stopped on exit."""

    name = "alertmanager"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__("rucio-metrics-alertmanager-", "alertmanager.log")
        self.config = config

    def start(self) -> None:
        config_file = self.write_config("alertmanager.yml", self.config)
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


class WebhookReceiver(JSONHTTPServer):
    """Keeps every JSON document Alertmanager's webhook POSTs to it (see ``posted``)."""

    def wait_for(self, match: Callable[[dict[str, Any]], bool], seconds: float = 60) -> dict[str, Any]:
        """The first alert (with its notification's ``receiver``) that ``match`` accepts."""
        deadline = time.monotonic() + seconds
        while True:
            with self.lock:
                alerts = [{**alert, "receiver": n["receiver"]} for n in self.posted for alert in n["alerts"]]
            for alert in alerts:
                if match(alert):
                    return alert
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching alert within {seconds:.0f} s; received: {alerts}")
            time.sleep(0.2)
