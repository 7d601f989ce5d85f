"""A Tornado application served on 127.0.0.1 from a thread with its own event loop.

Test equipment for servers that live in the test's own process (the Rucio
stand-in, the fleet benchmark's simulated targets):

    served = TornadoThread(app, "rucio-standin")
    port = served.start()
    ...
    served.stop()
"""

from __future__ import annotations

import asyncio
import socket
import threading

import tornado.httpserver
import tornado.web


class TornadoThread:
    """``app`` on a free loopback port, in a daemon thread; ``stop()`` closes every connection."""

    def __init__(self, app: tornado.web.Application, name: str, backlog: int = 128) -> None:
        self.app = app
        self.name = name
        self.backlog = backlog
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Serve; the port, once the server accepts connections."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(self.backlog)
        sock.setblocking(False)
        ready = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            server = tornado.httpserver.HTTPServer(self.app)  # bound to this thread's loop
            server.add_sockets([sock])
            loop.call_soon(ready.set)
            loop.run_forever()
            server.stop()
            loop.run_until_complete(server.close_all_connections())
            loop.close()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.name} did not start")
        return int(sock.getsockname()[1])

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None
