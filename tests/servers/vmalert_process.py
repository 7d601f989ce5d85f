"""A real vmalert in a child process, on loopback: rules evaluated against a VictoriaMetrics.

Test equipment for sharded scraping: Debian's ``vmalert`` (from the
``victoria-metrics`` package) with the given rule files, reading and writing
a ``VictoriaMetricsProcess`` and sending alerts to ``notifier_url``.

    with vmalert_process.VMAlertProcess(rule_files, victoria, receiver.url) as vmalert:
        victoria.values("ALERTS")
"""

from __future__ import annotations

import os
from pathlib import Path

from .child_process import LoopbackService
from .victoria_metrics_process import VictoriaMetricsProcess


class VMAlertProcess(LoopbackService):
    """``vmalert`` on 127.0.0.1, every ``interval``; stopped on exit."""

    name = "vmalert"

    def __init__(self, rule_files: list[Path], victoria: VictoriaMetricsProcess, notifier_url: str,
                 interval: str = "1s") -> None:
        super().__init__("rucio-metrics-vmalert-", "vmalert.log")
        self.rule_files, self.victoria, self.notifier_url, self.interval = rule_files, victoria, notifier_url, interval

    def start(self) -> None:
        store = self.victoria.url.rstrip("/")
        command = [
            "vmalert",
            *[f"-rule={path}" for path in self.rule_files],
            f"-datasource.url={store}",
            f"-remoteWrite.url={store}",
            f"-remoteRead.url={store}",
            f"-notifier.url={self.notifier_url}",
            f"-evaluationInterval={self.interval}",
            "-remoteWrite.flushInterval=1s",
            f"-httpListenAddr=127.0.0.1:{self.port}",
        ]
        self.start_and_wait(
            command, dict(os.environ), lambda: self.session.get(self.url + "health", timeout=2).text.strip() == "OK", 30
        )
