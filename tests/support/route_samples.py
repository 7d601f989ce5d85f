"""What the Rucio route tests compare: our counters over HTTP ``/metrics``, before and after, and the
calls a real Rucio server logged.

Shared by tests/test_rucio_routes.py and tests/test_browser.py (a real Rucio
server) and tests/test_rucio_faults.py (the Rucio stand-in, for injected faults).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import requests

from ..servers.jupyter_server_process import JupyterServerProcess

HTTP = "rucio_jupyterlab_http_"
RUCIO = "rucio_jupyterlab_rucio_"

Key = tuple[str, frozenset[tuple[str, str]]]
Samples = dict[Key, float]


def counters(samples: Samples) -> Samples:
    """Our counters and duration counts; sums and timestamps vary from run to run."""
    return {k: v for k, v in samples.items() if k[0].startswith((HTTP, RUCIO)) and k[0].endswith(("_total", "_count"))}


def changes(before: Samples, after: Samples) -> Samples:
    before, after = counters(before), counters(after)
    diff = {k: after[k] - before.get(k, 0.0) for k in after}
    return {k: v for k, v in diff.items() if v}


def key(name: str, **labels: str) -> Key:
    return (name, frozenset(labels.items()))


def inbound(method: str, route: str, status: int, times: int = 1, exception: str | None = None,
            fault: str | None = None) -> Samples:
    """The inbound samples one request (or ``times``) to ``route`` adds.

    A failed request (4xx but 499, 5xx) is also counted by whose ``fault`` it is, ``service`` or
    ``user``: the test must say which, as the one who knows what the request met.
    """
    handler = f"/rucio-jupyterlab/{route}"
    out = {
        key(HTTP + "requests_total", handler=handler, method=method, status_code=str(status)): float(times),
        key(HTTP + "request_duration_seconds_count", handler=handler, method=method): float(times),
    }
    if exception:
        out[key(HTTP + "exceptions_total", handler=handler, method=method, exception=exception)] = float(times)
    failed = status >= 400 and status != 499
    if failed != (fault is not None):
        raise TypeError(f"{method} {route} {status}: " + ("say whose fault it is" if failed else "no fault to say"))
    if fault is not None:
        out[key(HTTP + "request_failures_total", handler=handler, method=method, fault=fault)] = float(times)
    return out


def outbound(instance: str, operation: str, outcome: str = "2xx", times: int = 1) -> Samples:
    """The outbound samples ``times`` calls of one RucioAPI method add."""
    return {
        key(RUCIO + "requests_total", instance=instance, operation=operation, outcome=outcome): float(times),
        key(RUCIO + "request_duration_seconds_count", instance=instance, operation=operation): float(times),
    }


def expect(*parts: Samples) -> Samples:
    total: Counter[Key] = Counter()
    for part in parts:
        total.update(part)
    return dict(total)


def seconds(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(key(name, **labels), 0.0)


def outbound_calls(samples: Samples) -> Counter[tuple[str, str]]:
    """``(operation, outcome)`` of the outbound calls in ``samples`` (a change), summed over instances."""
    calls: Counter[tuple[str, str]] = Counter()
    for (name, labels), value in samples.items():
        if name == RUCIO + "requests_total":
            label = dict(labels)
            calls[(label["operation"], label["outcome"])] += int(value)
    return calls


# What each RucioAPI method asks Rucio, as Rucio's access log shows it.
OPERATION_OF_REQUEST = [
    ("authenticate", "GET", r"/auth/userpass"),
    ("get_scopes", "GET", r"/scopes/"),
    ("get_rses", "GET", r"/rses/?(\?.*)?"),
    ("search_did", "GET", r"/dids/[^/]+/dids/search\?.*"),
    ("get_metadata", "GET", r"/dids/[^/]+/.+/meta"),
    ("get_files", "GET", r"/dids/[^/]+/.+/files"),
    ("get_parents", "GET", r"/dids/[^/]+/.+/parents"),
    ("get_rules", "GET", r"/dids/[^/]+/.+/rules"),
    ("get_rule_details", "GET", r"/rules/\w+"),
    ("get_replicas", "GET", r"/replicas/[^/]+/.+"),
    ("add_replication_rule", "POST", r"/rules/"),
]


def logged_calls(entries: list[tuple[str, str, int]]) -> Counter[tuple[str, str]]:
    """``(operation, outcome)`` of the calls in Rucio's access log, as rucio_metrics should count them.

    A ``3xx`` is a redirect that ``requests`` follows inside the same call: the
    call is counted where it lands. ``add_replication_rule`` returns Rucio's
    error answer instead of raising: its ``4xx`` or ``5xx`` is an ``error``.
    """
    calls: Counter[tuple[str, str]] = Counter()
    for method, path, status in entries:
        if 300 <= status < 400:
            continue
        operation = next((op for op, m, pattern in OPERATION_OF_REQUEST
                          if m == method and re.fullmatch(pattern, path)), f"{method} {path}")
        outcome = f"{status // 100}xx"
        calls[(operation, outcome)] += 1
    return calls


class Session:
    """A module's Jupyter server, with the counters as they were when the test started."""

    def __init__(self, server: JupyterServerProcess) -> None:
        self.server = server
        self.before = server.samples()

    def call(self, method: str, route: str, json: Any = None, **params: str) -> requests.Response:
        return self.server.request(
            method, f"rucio-jupyterlab/{route}", params=params, json=json, allow_redirects=False
        )

    def changes(self) -> Samples:
        return changes(self.before, self.server.samples())

    def durations(self) -> Samples:
        after = self.server.samples()
        return {k: v - self.before.get(k, 0.0) for k, v in after.items() if k[0].endswith("_sum")}


def oidc_token_file(directory: Path) -> Path:
    """A JWT like an identity provider's: rucio-jupyterlab reads its expiry without checking the signature."""
    path = directory / "oidc-token"
    claims = {"sub": "alice", "exp": int(time.time()) + 3600}
    path.write_text(jwt.encode(claims, "a-test-signing-key-of-32-bytes!!", algorithm="HS256"))
    return path


def log_in(server: JupyterServerProcess, credentials: Callable[[str], dict[str, Any]]) -> None:
    """Userpass on both instances, atlas's auth method chosen: what the Rucio UI does first."""
    assert server.request("PUT", "rucio-jupyterlab/instances", json={"instance": "atlas", "auth": "userpass"}).ok
    for namespace in ("atlas", "cms"):
        assert server.request("PUT", "rucio-jupyterlab/auth", json=credentials(namespace)).ok


@contextmanager
def logged_in_server(
    instance_config: Callable[..., dict[str, Any]], credentials: Callable[[str], dict[str, Any]], folder: Path
) -> Iterator[JupyterServerProcess]:
    """A Jupyter server at ``/user/alice/`` with the instances atlas (an OIDC token file too) and cms
    (download mode) from ``instance_config``, logged in with ``credentials``."""
    token = oidc_token_file(folder)
    instances = [
        instance_config("atlas", oidc_auth="file", oidc_file_name=str(token)),
        instance_config("cms", mode="download"),
    ]
    with JupyterServerProcess(base_url="/user/alice/", rucio_instances=instances) as server:
        log_in(server, credentials)
        yield server
