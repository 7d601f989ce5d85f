"""A Rucio server stand-in for tests: real HTTP on loopback, small fixture data, fault knobs.

Test equipment (also used by the demo), not product. It speaks the parts of
Rucio's REST API that rucio-jupyterlab 41 calls, the way Rucio answers them:

- ``GET /auth/userpass`` (``X-Rucio-Username``/``-Password``/``-Account``
  headers) answers a token in ``X-Rucio-Auth-Token`` and its expiry in
  ``X-Rucio-Auth-Token-Expires``; ``GET /auth/validate`` checks a token
  (the OIDC check).
- ``GET /scopes/`` (a JSON list), ``GET /rses?expression=`` and the DID,
  replica and rule lists, one JSON document per line (Rucio streams them
  as ``application/x-json-stream``), ``GET /dids/<scope>/<name>/meta`` (one
  JSON document), ``POST /rules/`` (``201`` and a JSON list of rule ids).
- Every other call needs a token it issued; errors carry Rucio's
  ``ExceptionClass``/``ExceptionMessage`` headers and JSON body.

Knobs match a regex against ``"<METHOD> <path>"``, e.g. ``"GET /scopes/"``:
``delay`` (every matching answer waits), ``fail`` (answer an error status)
``drop`` (close the connection without an answer) and ``truncate`` (close it in
the middle of the body). ``requests()`` lists
what the server was asked, so a test can see exactly what reached Rucio.

    with RucioStandIn() as rucio:
        rucio.fail("GET /scopes/", 500, times=1)
        instance = rucio.instance_config("atlas")   # for c.RucioConfig.instances
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import tornado.httpserver
import tornado.web
from requests import certs

from .tornado_thread import TornadoThread

USERNAME = "alice"
PASSWORD = "wonderland"
ACCOUNT = "alice"
RSE = "SITE_DISK"

# Fixture data: a container holding a dataset of two files, a second
# dataset whose search record lacks its type (so rucio-jupyterlab asks for
# its metadata, as with Rucio's JSON metadata plugin), one rule on SITE_DISK.
SCOPES = ["user.alice", "data18", "mc16"]
RSES = [
    {"rse": "SITE_DISK", "rse_type": "DISK", "deterministic": True, "volatile": False},
    {"rse": "SITE_TAPE", "rse_type": "TAPE", "deterministic": True, "volatile": False},
    {"rse": "CERN_SCRATCH", "rse_type": "DISK", "deterministic": True, "volatile": True},
]
FILES = {
    ("data18", "file1.root"): 1000,
    ("data18", "file2.root"): 2000,
    ("data18", "file3.root"): 3000,
}
DIDS: dict[tuple[str, str], dict[str, Any]] = {
    ("data18", "AOD.container"): {"did_type": "CONTAINER", "children": [("data18", "AOD.dataset")]},
    ("data18", "AOD.dataset"): {
        "did_type": "DATASET", "children": [("data18", "file1.root"), ("data18", "file2.root")],
    },
    ("data18", "legacy.dataset"): {"did_type": "DATASET", "children": [("data18", "file3.root")], "typeless": True},
    **{did: {"did_type": "FILE", "children": []} for did in FILES},
}
RULES = [
    {"id": "a1b2c3d4e5f60718293a4b5c6d7e8f90", "scope": "data18", "name": "AOD.dataset",
     "rse_expression": RSE, "state": "OK", "expires_at": None, "account": ACCOUNT, "copies": 1},
]


@dataclass
class _Knob:
    pattern: re.Pattern[str]
    action: str  # "delay", "fail", "drop" or "truncate"
    seconds: float = 0.0
    status: int = 500
    times: int | None = None  # None: every matching request
    exception_class: str = "RucioException"  # of a "fail"

    def take(self) -> bool:
        """Whether this knob applies to one more request (and count it)."""
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    knobs: list[_Knob] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    token_lifetime: int = 3600


class RucioError(tornado.web.HTTPError):
    """An error answer the way Rucio sends it: a status, and the exception in headers and body."""

    def __init__(self, status: int, exception_class: str, message: str) -> None:
        super().__init__(status)
        self.exception_class = exception_class
        self.message = message


class _RucioHandler(tornado.web.RequestHandler):
    state: _State

    def initialize(self, state: _State) -> None:
        self.state = state

    async def prepare(self) -> None:
        line = f"{self.request.method} {self.request.path}"
        with self.state.lock:
            self.state.seen.append(line)
            knobs = [k for k in self.state.knobs if k.pattern.search(line) and k.take()]
        for knob in knobs:
            if knob.action == "delay":
                await asyncio.sleep(knob.seconds)
        for knob in knobs:
            if knob.action == "drop":
                self.detach().close()
                raise tornado.web.Finish()
            if knob.action == "truncate":
                # Headers promise a body the connection then cuts short.
                stream = self.detach()
                await stream.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: 1000\r\n\r\n[\"partial")
                stream.close()
                raise tornado.web.Finish()
            if knob.action == "fail":
                raise RucioError(knob.status, knob.exception_class, f"injected failure {knob.status}")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, RucioError):
            exception_class, message = error.exception_class, error.message
        else:
            exception_class, message = "RucioException", self._reason
        self.set_header("ExceptionClass", exception_class)
        self.set_header("ExceptionMessage", message)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"ExceptionClass": exception_class, "ExceptionMessage": message}))

    def require_token(self) -> None:
        if self.request.headers.get("X-Rucio-Auth-Token") not in self.state.tokens:
            raise RucioError(401, "CannotAuthenticate", "Cannot authenticate with given credentials")

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_lines(self, values: Iterable[dict[str, Any]]) -> None:
        self.set_header("Content-Type", "application/x-json-stream")
        self.finish("".join(json.dumps(v) + "\n" for v in values))


class UserpassHandler(_RucioHandler):
    def get(self) -> None:
        headers = self.request.headers
        if (headers.get("X-Rucio-Username"), headers.get("X-Rucio-Password")) != (USERNAME, PASSWORD) or headers.get(
            "X-Rucio-Account", ACCOUNT
        ) != ACCOUNT:
            raise RucioError(401, "CannotAuthenticate", "Cannot authenticate with given credentials")
        token = f"{ACCOUNT}-standin-{uuid.uuid4().hex}"
        with self.state.lock:
            self.state.tokens.add(token)
        expires = formatdate(time.time() + self.state.token_lifetime, usegmt=True).replace("GMT", "UTC")
        self.set_header("X-Rucio-Auth-Token", token)
        self.set_header("X-Rucio-Auth-Token-Expires", expires)
        self.finish()


class ValidateHandler(_RucioHandler):
    # The OIDC check sends the user's own (IdP-issued) token: any non-empty one is accepted.
    def get(self) -> None:
        if not self.request.headers.get("X-Rucio-Auth-Token"):
            raise RucioError(401, "CannotAuthenticate", "Cannot authenticate to account None with given credentials")
        self.write_json({"account": ACCOUNT, "identity": "CN=alice", "lifetime": "2099-01-01T00:00:00"})


class ScopesHandler(_RucioHandler):
    def get(self) -> None:
        self.require_token()
        self.write_json(SCOPES)


class RSEsHandler(_RucioHandler):
    def get(self) -> None:
        self.require_token()
        expression = self.get_query_argument("expression", "*")
        rses = [r for r in RSES if fnmatch.fnmatchcase(r["rse"], expression)]
        if not rses:
            raise RucioError(400, "InvalidRSEExpression", f"RSE Expression resulted in an empty set: {expression}")
        self.write_lines(rses)


def _record(scope: str, name: str, *, long: bool = True) -> dict[str, Any]:
    did = DIDS[(scope, name)]
    record: dict[str, Any] = {"scope": scope, "name": name, "did_type": did["did_type"]}
    if long:
        files = _files(scope, name)
        record.update(bytes=sum(FILES[f] for f in files), length=len(files))
    return record


def _files(scope: str, name: str) -> list[tuple[str, str]]:
    if (scope, name) in FILES:
        return [(scope, name)]
    return [f for child in DIDS[(scope, name)]["children"] for f in _files(*child)]


def _known(scope: str, name: str) -> tuple[str, str]:
    if (scope, name) not in DIDS:
        raise RucioError(404, "DataIdentifierNotFound", f"Data identifier '{scope}:{name}' not found")
    return scope, name


class SearchHandler(_RucioHandler):
    def get(self, scope: str) -> None:
        self.require_token()
        pattern = self.get_query_argument("name", "*")
        wanted = {
            "all": {"CONTAINER", "DATASET", "FILE"}, "collection": {"CONTAINER", "DATASET"},
            "container": {"CONTAINER"}, "dataset": {"DATASET"}, "file": {"FILE"},
        }.get(self.get_query_argument("type", "collection"), set())
        long = self.get_query_argument("long", "0") == "1"
        results = []
        for (did_scope, name), did in sorted(DIDS.items()):
            if did_scope == scope and did["did_type"] in wanted and fnmatch.fnmatchcase(name, pattern):
                record = _record(did_scope, name, long=long)
                if did.get("typeless"):
                    record["did_type"] = None
                results.append(record)
        self.write_lines(results)


class DIDHandler(_RucioHandler):
    """``/dids/<scope>/<name>/{meta,files,parents,rules}``; a name may contain slashes."""

    def get(self, scope: str, name: str, what: str) -> None:
        self.require_token()
        scope, name = _known(scope, name)
        if what == "meta":
            self.write_json({**_record(scope, name), "account": ACCOUNT, "availability": "AVAILABLE"})
        elif what == "files":
            self.write_lines({"scope": s, "name": n, "bytes": FILES[(s, n)], "adler32": "01234567", "events": 10}
                             for s, n in _files(scope, name))
        elif what == "parents":
            self.write_lines({"scope": s, "name": n, "type": d["did_type"]}
                             for (s, n), d in sorted(DIDS.items()) if (scope, name) in d["children"])
        else:
            self.write_lines(r for r in RULES if (r["scope"], r["name"]) == (scope, name))


class ReplicasHandler(_RucioHandler):
    def get(self, scope: str, name: str) -> None:
        self.require_token()
        scope, name = _known(scope, name)
        self.write_lines(
            {"scope": s, "name": n, "bytes": FILES[(s, n)], "adler32": "01234567",
             "rses": {RSE: [f"root://eos.example.org:1094//eos/rucio/{s}/{n}"]}, "states": {RSE: "AVAILABLE"}}
            for s, n in _files(scope, name)
        )


class RulesHandler(_RucioHandler):
    def get(self, rule_id: str) -> None:
        self.require_token()
        for rule in RULES:
            if rule["id"] == rule_id:
                self.write_json(rule)
                return
        raise RucioError(404, "RuleNotFound", f"No replication rule found with the id {rule_id}")

    def post(self, rule_id: str) -> None:
        self.require_token()
        if rule_id:
            raise RucioError(405, "MethodNotAllowed", "POST a rule to /rules/")
        body = json.loads(self.request.body or b"{}")
        for did in body.get("dids", []):
            _known(did.get("scope", ""), did.get("name", ""))
        # A new rule id per call; fixture rules stay as they are, so tests stay independent.
        self.write_json([uuid.uuid4().hex], status=201)


class NotFoundHandler(_RucioHandler):
    def get(self, path: str) -> None:
        raise RucioError(404, "MethodNotFound", f"No such endpoint: {self.request.method} /{path}")

    post = put = delete = get


class RucioStandIn:
    """A Rucio stand-in on ``127.0.0.1`` and a free port, served from a background thread."""

    def __init__(self, token_lifetime: int = 3600) -> None:
        self.state = _State(token_lifetime=token_lifetime)
        self.port = 0
        self._served = TornadoThread(self._application(), "rucio-standin")

    def __enter__(self) -> RucioStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = self._served.start()

    def stop(self) -> None:
        self._served.stop()

    def _application(self) -> tornado.web.Application:
        kwargs = {"state": self.state}
        name = r"(.+)"
        return tornado.web.Application(log_function=lambda handler: None, handlers=[
            (r"/auth/userpass", UserpassHandler, kwargs),
            (r"/auth/validate", ValidateHandler, kwargs),
            (r"/scopes/?", ScopesHandler, kwargs),
            (r"/rses/?", RSEsHandler, kwargs),
            (r"/dids/([^/]+)/dids/search", SearchHandler, kwargs),
            (rf"/dids/([^/]+)/{name}/(meta|files|parents|rules)", DIDHandler, kwargs),
            (rf"/replicas/([^/]+)/{name}", ReplicasHandler, kwargs),
            (r"/rules/?([^/]*)", RulesHandler, kwargs),
            (r"/(.*)", NotFoundHandler, kwargs),
        ])

    # -- knobs ---------------------------------------------------------------

    def delay(self, pattern: str, seconds: float, times: int | None = None) -> None:
        """Answer requests matching ``pattern`` (regex on ``"GET /scopes/"``) ``seconds`` later."""
        self._add(_Knob(re.compile(pattern), "delay", seconds=seconds, times=times))

    def fail(self, pattern: str, status: int = 500, times: int | None = None,
             exception_class: str = "RucioException") -> None:
        """Answer matching requests with ``status`` and a Rucio error body naming ``exception_class``."""
        self._add(_Knob(re.compile(pattern), "fail", status=status, times=times, exception_class=exception_class))

    def drop(self, pattern: str, times: int | None = None) -> None:
        """Close the connection of matching requests without answering."""
        self._add(_Knob(re.compile(pattern), "drop", times=times))

    def truncate(self, pattern: str, times: int | None = None) -> None:
        """Answer matching requests with 200 and a part of the promised body, then close the connection."""
        self._add(_Knob(re.compile(pattern), "truncate", times=times))

    def reset(self) -> None:
        """Remove every knob and forget the requests seen (issued tokens stay valid)."""
        with self.state.lock:
            self.state.knobs.clear()
            self.state.seen.clear()

    def _add(self, knob: _Knob) -> None:
        with self.state.lock:
            self.state.knobs.append(knob)

    def requests(self) -> list[str]:
        """``"<METHOD> <path>"`` of every request so far, in arrival order."""
        with self.state.lock:
            return list(self.state.seen)

    # -- configuration -------------------------------------------------------

    def instance_config(self, name: str, mode: str = "replica", **extra: Any) -> dict[str, Any]:
        """An entry for ``c.RucioConfig.instances`` whose Rucio server is this stand-in."""
        return rucio_instance(self.url, name, mode, RSE, "/eos/rucio", 3, **extra)


def rucio_instance(
    url: str, name: str, mode: str, destination_rse: str, rse_mount_path: str, path_begins_at: int, **extra: Any
) -> dict[str, Any]:
    """An entry for ``c.RucioConfig.instances`` whose Rucio server is at ``url``.

    rucio-jupyterlab's schema wants a CA bundle in download mode; over
    plain HTTP it is never used, so the one ``requests`` ships will do.
    """
    if mode == "download":
        extra.setdefault("rucio_ca_cert", certs.where())
    return {
        "name": name,
        "display_name": name.upper(),
        "rucio_base_url": url,
        "rucio_auth_url": url,
        "rucio_webui_url": f"{url}/ui",
        "mode": mode,
        "destination_rse": destination_rse,
        "rse_mount_path": rse_mount_path,
        "path_begins_at": path_begins_at,
        "wildcard_enabled": True,
        **extra,
    }


def userpass_credentials(namespace: str) -> dict[str, Any]:
    """The body of ``PUT rucio-jupyterlab/auth`` that logs in to the stand-in."""
    return {
        "namespace": namespace,
        "type": "userpass",
        "params": {"username": USERNAME, "password": PASSWORD, "account": ACCOUNT},
    }
