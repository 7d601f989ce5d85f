"""A stand-in Rucio server on loopback, so an async route answers 200 end to end.

rucio-jupyterlab's async verbs all call the Rucio server. This answers the
two calls ``list-scopes`` makes: userpass authentication (once: the token is
cached) and ``GET /scopes/``. It runs on its own thread and event loop in the
benchmark process, and answers every request with ``Connection: close``, as
rucio-jupyterlab opens a new connection per call anyway.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

SCOPES = json.dumps(["user.alice", "data18_13TeV", "mc16_13TeV"]).encode()
# rucio-jupyterlab parses the expiry with '%a, %d %b %Y %H:%M:%S %Z'.
TOKEN_HEADERS = b"X-Rucio-Auth-Token: benchmark-token\r\nX-Rucio-Auth-Token-Expires: Fri, 01 Jan 2100 00:00:00 UTC\r\n"


def _response(status: bytes, body: bytes = b"", headers: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nConnection: close\r\n" + headers + b"\r\n" + body
    )


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].split(b"?", 1)[0]
        if path.startswith(b"/auth/"):
            writer.write(_response(b"200 OK", headers=TOKEN_HEADERS))
        elif path == b"/scopes/":
            writer.write(_response(b"200 OK", SCOPES))
        else:
            writer.write(_response(b"404 Not Found", b"{}"))
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, IndexError):
        pass
    finally:
        writer.close()


class FakeRucio:
    """``with FakeRucio() as rucio:`` serves on ``rucio.url`` until the block ends."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-rucio", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def instance(self, name: str = "atlas") -> dict[str, Any]:
        """A rucio-jupyterlab instance config that points at this server."""
        return {
            "name": name,
            "display_name": name.upper(),
            "rucio_base_url": self.url,
            "rucio_auth_url": self.url,
            "mode": "replica",
            "destination_rse": "SITE_DISK",
            "rse_mount_path": "/eos/rucio",
        }

    def __enter__(self) -> FakeRucio:
        self._thread.start()
        start = asyncio.start_server(_serve, "127.0.0.1", 0, backlog=512)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
