"""A JSON-answering HTTP server on 127.0.0.1 whose every answer comes from a function.

Test equipment for the fleet helper's hub: the answer function sees the
request's path and headers and returns (status, extra headers, JSON body).

    with JSONHTTPServer(lambda path, headers: (200, {}, [])) as hub:
        urllib.request.urlopen(hub.url())
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
    """Answers every GET with ``answer(path, headers)``; ``seen`` lists (path, Authorization header)."""

    def __init__(self, answer: AnswerFunction) -> None:
        self.answer = answer
        self.seen: list[tuple[str, str | None]] = []
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

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/"

    def __enter__(self) -> JSONHTTPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
