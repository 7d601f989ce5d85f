"""Plain Tornado handlers that reproduce each way a request can end (see design.md)."""

from __future__ import annotations

import asyncio

from tornado.web import Application, Finish, HTTPError, RequestHandler, authenticated

PREFIX = "/rucio-jupyterlab"


class SyncHandler(RequestHandler):
    def get(self) -> None:
        self.write("sync")

    def put(self) -> None:
        self.write("put")


class AsyncHandler(RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(float(self.get_query_argument("sleep", "0")))
        self.write("async")


class LoginRequiredHandler(RequestHandler):
    """Like every rucio verb: ``@authenticated`` (a sync wrapper) around an async method."""

    def get_current_user(self) -> str | None:
        return self.get_query_argument("user", None)

    @authenticated
    async def get(self) -> None:
        await asyncio.sleep(0)
        self.write("hello")

    @authenticated
    async def post(self) -> None:
        self.write("posted")


class HTTPErrorHandler(RequestHandler):
    def get(self) -> None:
        raise HTTPError(404)


class CrashingHandler(RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")


class PrepareRejectsHandler(RequestHandler):
    """Like rucio's ``RucioAPIHandler.prepare`` without ``?namespace=``."""

    async def prepare(self) -> None:
        if not self.get_query_argument("namespace", None):
            raise HTTPError(400, reason="Missing Rucio instance")

    def get(self) -> None:
        self.write("prepared")


class FinishHandler(RequestHandler):
    def get(self) -> None:
        raise Finish("finished early")


class ETagHandler(RequestHandler):
    def get(self) -> None:
        self.write("same body every time")


class DetachHandler(RequestHandler):
    """Takes the connection over and answers on the raw stream, as a WebSocket upgrade or a proxy does."""

    async def get(self) -> None:
        status = int(self.get_query_argument("status", "200"))
        if status != 200:
            self.set_status(status)
        stream = self.detach()
        await stream.write(f"HTTP/1.1 {status} X\r\nContent-Length: 8\r\nConnection: close\r\n\r\ndetached".encode())
        stream.close()


class OtherHandler(RequestHandler):
    def get(self) -> None:
        self.write("not rucio")


def rucio_like_rules(base_url: str = "/") -> list[tuple[str, type[RequestHandler]]]:
    base = base_url.rstrip("/")
    return [
        (f"{base}{PREFIX}/sync", SyncHandler),
        (f"{base}{PREFIX}/async", AsyncHandler),
        (f"{base}{PREFIX}/login", LoginRequiredHandler),
        (f"{base}{PREFIX}/http-error", HTTPErrorHandler),
        (f"{base}{PREFIX}/crash", CrashingHandler),
        (f"{base}{PREFIX}/prepare", PrepareRejectsHandler),
        (f"{base}{PREFIX}/finish", FinishHandler),
        (f"{base}{PREFIX}/etag", ETagHandler),
        (f"{base}{PREFIX}/also-sync", SyncHandler),
    ]


def make_app(base_url: str = "/", nested: bool = True, **settings: object) -> Application:
    """An app whose Rucio-like routes are added the way rucio-jupyterlab adds them."""
    base = base_url.rstrip("/")
    app = Application([(f"{base}/other", OtherHandler), (f"{base}/sync-elsewhere", SyncHandler)],
                      login_url="/login", **settings)
    if nested:
        app.add_handlers(".*$", rucio_like_rules(base_url))  # nests an _ApplicationRouter
    else:
        app.default_router.add_rules(rucio_like_rules(base_url))
    return app
