"""A bounded concurrent HTTP client for loopback load tests."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

from tornado.httpclient import AsyncHTTPClient, HTTPRequest


def send_all(requests: Iterable[HTTPRequest], concurrency: int, timeout: float = 120) -> Counter[tuple[str, str, int]]:
    """Send every request, ``concurrency`` at a time; count (method, url, status).

    Status 599 means the client got no response. Stops after ``timeout`` seconds.
    """

    async def run() -> Counter[tuple[str, str, int]]:
        client = AsyncHTTPClient(force_instance=True, max_clients=concurrency)
        queue: asyncio.Queue[HTTPRequest] = asyncio.Queue()
        for request in requests:
            queue.put_nowait(request)
        tally: Counter[tuple[str, str, int]] = Counter()

        async def worker() -> None:
            while not queue.empty():
                request = queue.get_nowait()
                response = await client.fetch(request, raise_error=False)
                tally[(request.method, request.url, response.code)] += 1

        try:
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
        finally:
            client.close()
        return tally

    return asyncio.run(run())
