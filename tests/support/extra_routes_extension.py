"""A Jupyter server extension for tests that adds routes under the Rucio prefix.

Its name sorts after ``rucio_metrics``, so it loads later: its routes prove
that routes added after rucio_metrics loaded are instrumented too. It also
carries the handlers the reliability tests need: a slow async route and
handlers that fail at each stage of a request. With the environment variable
``RUCIO_METRICS_TEST_BREAK_RECORDING=1`` it makes every recording call of
rucio_metrics raise, to prove requests are served regardless. Outside the
prefix, ``POST <base_url>rucio-metrics-test/no-file-descriptors?seconds=S``
leaves the process no free file descriptor for S seconds, so that starting
a child process fails for real (``Process.start()`` raises ``OSError``).
"""

from __future__ import annotations

import asyncio
import os
import resource
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import IOLoop

from rucio_metrics.metrics import MethodMetrics


class SlowHandler(APIHandler):
    @web.authenticated
    async def get(self) -> None:
        await asyncio.sleep(float(self.get_query_argument("sleep", "1")))
        self.finish({"slept": True})


class LateHandler(APIHandler):
    @web.authenticated
    def get(self) -> None:
        self.finish({"late": True})


class FaultHandler(APIHandler):
    """Fails where ``?at=`` says: prepare, verb, on_finish or after_flush."""

    async def prepare(self) -> None:
        await super().prepare()
        if self.get_query_argument("at", "") == "prepare":
            raise KeyError("prepare failed")

    @web.authenticated
    async def get(self) -> None:
        at = self.get_query_argument("at", "")
        if at == "verb":
            raise ZeroDivisionError("verb failed")
        if at == "after_flush":
            self.write("partial ")
            await self.flush()
            raise LookupError("failed after the headers were sent")
        self.finish("fine")

    def on_finish(self) -> None:
        if self.get_query_argument("at", "") == "on_finish":
            raise RuntimeError("on_finish failed")


class NoFileDescriptorsHandler(APIHandler):
    """Lowers the soft RLIMIT_NOFILE and fills every free descriptor below it; undone after ``?seconds=``."""

    @web.authenticated
    def post(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
        held = []
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass

        def restore() -> None:
            for fd in held:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        IOLoop.current().call_later(float(self.get_query_argument("seconds", "2")), restore)
        self.finish({"held": len(held)})


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "tests.support.extra_routes_extension"}]


def _break_recording() -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("recording is broken on purpose")

    MethodMetrics.started = broken  # type: ignore[method-assign]
    MethodMetrics.finished = broken  # type: ignore[method-assign]
    MethodMetrics.raised = broken  # type: ignore[method-assign]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    base = url_path_join(serverapp.web_app.settings["base_url"], "rucio-jupyterlab", "test")
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base, "slow"), SlowHandler),
        (url_path_join(base, "late"), LateHandler),
        (url_path_join(base, "fault"), FaultHandler),
    ])
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(serverapp.web_app.settings["base_url"], "rucio-metrics-test", "no-file-descriptors"),
         NoFileDescriptorsHandler),
    ])
    if os.environ.get("RUCIO_METRICS_TEST_BREAK_RECORDING") == "1":
        _break_recording()
