"""A real VictoriaMetrics (single node) in a child process, on loopback, with temporary storage.

Test equipment (also used by the fleet benchmark): Debian's ``victoria-metrics``
on a random 127.0.0.1 port. It takes Prometheus remote write at
``/api/v1/write`` and answers PromQL on the same query API as Prometheus.

    with VictoriaMetricsProcess() as victoria:
        point_remote_write_at(config, victoria)      # a shipped remote-write config, made to send here
        victoria.values("count(up)")
"""

from __future__ import annotations

import os
from typing import Any

from .child_process import LoopbackService
from .prometheus_process import PromQLAPI


class VictoriaMetricsProcess(PromQLAPI, LoopbackService):
    """``victoria-metrics`` on 127.0.0.1 with temporary storage; stopped on exit."""

    name = "victoria-metrics"

    def __init__(self) -> None:
        super().__init__("rucio-metrics-victoria-", "victoria-metrics.log")

    def start(self) -> None:
        command = [
            "victoria-metrics",
            f"-storageDataPath={self.root / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=1d",
            # Answer with every sample received, at once: by default the last 30 s are
            # hidden (search.latencyOffset) and range results are cached.
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ]
        self.start_and_wait(
            command, dict(os.environ), lambda: self.session.get(self.url + "health", timeout=2).text.strip() == "OK", 30
        )


def point_remote_write_at(config: dict[str, Any], victoria: VictoriaMetricsProcess) -> None:
    """Send a Prometheus config's remote write to ``victoria``, flushed every second; the rest as it is."""
    for target in config["remote_write"]:
        target["url"] = victoria.url + "api/v1/write"
        target.setdefault("queue_config", {})["batch_send_deadline"] = "1s"
        for auth in ("authorization", "basic_auth", "oauth2", "sigv4", "azuread"):
            target.pop(auth, None)
