"""A Jupyter server extension for tests that adds routes under the Rucio prefix.

Its name sorts after ``rucio_metrics``, so it loads later: its routes prove
that routes added after rucio_metrics loaded are instrumented too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web


class SlowHandler(APIHandler):
    @web.authenticated
    async def get(self) -> None:
        await asyncio.sleep(float(self.get_query_argument("sleep", "1")))
        self.finish({"slept": True})


class LateHandler(APIHandler):
    @web.authenticated
    def get(self) -> None:
        self.finish({"late": True})


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "tests.extra_routes_extension"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    base = url_path_join(serverapp.web_app.settings["base_url"], "rucio-jupyterlab", "test")
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base, "slow"), SlowHandler),
        (url_path_join(base, "late"), LateHandler),
    ])
