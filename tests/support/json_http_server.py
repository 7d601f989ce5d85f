"""A JSON HTTP server on 127.0.0.1: GETs answered by a function, POSTed documents kept.

Test equipment for the fleet helper's hub and Alertmanager's webhook: the
answer function sees a GET's path and headers and returns (status, extra
headers, JSON body); every JSON document POSTed is kept in ``posted``.

    with JSONHTTPServer(lambda path, headers: (200, {}, [])) as hub:
        urllib.request.urlopen(hub.url)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (status, headers, JSON body) for one request, given its path and headers.
Answer = tuple[int, dict[str, str], Any]
AnswerFunction = Callable[[str, dict[str, str]], Answer]


class JSONHTTPServer:
    """Answers every GET with ``answer(path, headers)``; ``seen`` lists (path, Authorization header) of the GETs."""

    def __init__(self, answer: AnswerFunction = lambda path, headers: (404, {}, {}), host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.answer = answer
        self.seen: list[tuple[str, str | None]] = []
        self.posted: list[Any] = []
        self.lock = threading.Lock()  # POSTs arrive on the server's threads
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append((self.path, self.headers.get("Authorization")))
                status, headers, body = server.answer(self.path, dict(self.headers))
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server.lock:
                    server.posted.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return self.url_on("127.0.0.1")

    def url_on(self, host: str) -> str:
        """The root URL with ``host`` as the host name, e.g. ``localhost``."""
        return f"http://{host}:{self.port}/"

    def __enter__(self) -> JSONHTTPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
