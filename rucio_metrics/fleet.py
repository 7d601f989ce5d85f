"""List a JupyterHub's running servers as Prometheus file-based service discovery targets.

Prometheus scrapes every single-user server through the hub's proxy, at
``/user/<name>/metrics``, with a hub API token. Which servers run changes
all day, so this helper asks the Hub REST API for the ready servers and
writes them in Prometheus' ``file_sd_configs`` format; Prometheus picks up
the file whenever it changes::

    python -m rucio_metrics.fleet --hub-url https://hub.example.org/ \\
        --token-file /etc/prometheus/jupyterhub-fleet-token \\
        --output /etc/prometheus/targets/jupyterhub.json --interval 30

Each server is one target group: the proxy's address, the server's path in
``__metrics_path__`` and, because every target shares that address, an
``instance`` label naming the server (``alice``, or ``alice/gpu`` for a
named server) so series of different servers never collide:

>>> servers = [Server(user="alice", name="", url="/user/alice/")]
>>> target_groups(servers, "https://hub.example.org/")  # doctest: +NORMALIZE_WHITESPACE
[{'targets': ['hub.example.org'],
  'labels': {'__scheme__': 'https', '__metrics_path__': '/user/alice/metrics',
             'instance': 'alice', 'user': 'alice'}}]

Two tokens, never one: this helper's token holds ``list:users`` and
``read:servers`` (it lists the hub's users and servers), while Prometheus'
scrape token holds only the custom scope rucio_metrics admits at each
server's metrics. The scrape token is sent to every user's server, and a
single-user server runs its user's code, so every user can keep it: it must
open nothing but metrics. Neither token should hold ``access:servers``,
which opens every user's whole server. Only the standard library is used,
so the helper runs wherever rucio_metrics is installed, without a Jupyter
server.

What it trusts: the hub's origin (scheme, host and port of ``--hub-url``)
and nothing else. The token is sent only there; a redirect to another
origin is an error, never followed. An answer of the wrong shape is the
hub's fault, reported like a network error. No message ever contains the
token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .token_file import TokenFile, TokenFileError, readable_by_others, token_problem

# Ask for JupyterHub's paginated list form ({"items": [...], "_pagination": {...}});
# a hub that predates it answers with a plain list, which is handled too.
PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"
PAGE_LIMIT = 200  # JupyterHub's default api_page_max_limit
# 200,000 users at most: a hub whose pages never end is refused, not followed for ever.
MAX_PAGES = 1000


class FleetError(Exception):
    """The Hub API could not be read; the message says why."""


@dataclass(frozen=True)
class Server:
    """One ready single-user server, as the Hub API describes it."""

    user: str
    name: str  # "" for the user's default server
    url: str  # the server's base URL, e.g. "/user/alice/" (a full URL with subdomains)

    @property
    def instance(self) -> str:
        """The ``instance`` label: ``alice``, or ``alice/gpu`` for a named server."""
        return f"{self.user}/{self.name}" if self.name else self.user


def list_ready_servers(hub_url: str, token: str, timeout: float = 30.0) -> list[Server]:
    """Every ready server of every user, sorted, following the API's pages."""
    api = urllib.parse.urljoin(_with_slash(hub_url), "hub/api/users")
    servers = []
    for user in _users_with_ready_servers(api, token, timeout):
        if not isinstance(user, dict) or not isinstance(user.get("name"), str):
            raise _unexpected(api, "a user that is not an object with a name")
        models = user.get("servers") or {}
        if not isinstance(models, dict):
            raise _unexpected(api, f"user {user['name']!r} has 'servers' that is not an object")
        for name, model in models.items():
            if not isinstance(model, dict):
                raise _unexpected(api, f"server {name!r} of user {user['name']!r} is not an object")
            url = model.get("url")
            if model.get("ready") and url:
                if not isinstance(url, str):
                    raise _unexpected(api, f"server {name!r} of user {user['name']!r} has a 'url' that is not text")
                servers.append(Server(user=user["name"], name=name, url=url))
    return sorted(servers, key=lambda s: (s.user, s.name))


def _users_with_ready_servers(api: str, token: str, timeout: float) -> Iterator[Any]:
    offset = 0
    for _ in range(MAX_PAGES):
        query = urllib.parse.urlencode({"state": "ready", "offset": offset, "limit": PAGE_LIMIT})
        page = _get_json(f"{api}?{query}", token, timeout)
        if isinstance(page, list):  # a hub without pagination sends everything at once
            yield from page
            return
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise _unexpected(api, "neither a list of users nor an object with a list of 'items'")
        yield from page["items"]
        pagination = page.get("_pagination", {})
        if not isinstance(pagination, dict):
            raise _unexpected(api, "'_pagination' is not an object")
        following = pagination.get("next")
        if not following:
            return
        next_offset = following.get("offset") if isinstance(following, dict) else None
        if not isinstance(next_offset, int) or isinstance(next_offset, bool):
            raise _unexpected(api, "'_pagination.next' has no whole-number 'offset'")
        if next_offset <= offset:
            # The hub would send the same page for ever.
            raise _unexpected(api, f"the next page's offset {next_offset} does not advance past {offset}")
        offset = next_offset
    raise FleetError(
        f"GET {api} still had more pages after {MAX_PAGES} pages of {PAGE_LIMIT} users; stopped there"
    )


def _unexpected(api: str, what: str) -> FleetError:
    return FleetError(f"GET {api} answered JSON of an unexpected shape: {what}")


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only within the origin of the request, which carries the token."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if _origin(newurl) != _origin(req.full_url):
            fp.close()
            raise FleetError(
                f"GET {_without_query(req.full_url)} answered {code} redirecting to another origin, "
                f"{_origin_text(newurl)}: not followed, the token is only sent to {_origin_text(req.full_url)} "
                "(is --hub-url the hub's public URL?)"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_SameOriginRedirects)


def _get_json(url: str, token: str, timeout: float) -> Any:
    request = urllib.request.Request(
        url, headers={"Authorization": f"token {token}", "Accept": f"{PAGINATION_MEDIA_TYPE}, application/json"}
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
        hint = {
            403: " (the token needs the scopes list:users and read:servers)",
            404: " (is --hub-url the hub's public URL, including its base_url?)",
        }.get(e.code, "")
        raise FleetError(f"GET {_without_query(url)} answered {e.code} {e.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FleetError(f"GET {_without_query(url)} failed: {reason}") from None
    try:
        return json.loads(body)
    except ValueError as e:
        raise FleetError(f"GET {_without_query(url)} did not answer JSON: {e}") from None


def target_groups(servers: Sequence[Server], hub_url: str, address: str | None = None) -> list[dict[str, Any]]:
    """File-SD target groups for ``servers``, scraped through the proxy at ``hub_url``.

    ``address`` (``host:port``) overrides the proxy's address taken from
    ``hub_url``, for a Prometheus that reaches the proxy under another name.
    """
    hub = urllib.parse.urlsplit(hub_url)
    groups = []
    for server in servers:
        url = urllib.parse.urlsplit(server.url)
        # With user subdomains the API gives full URLs; otherwise a path on the hub's host.
        scheme, netloc = (url.scheme, url.netloc) if url.netloc else (hub.scheme, address or hub.netloc)
        labels = {
            "__scheme__": scheme or "http",
            # The API gives the path URL-escaped ("/user/a%20b/"), and Prometheus
            # escapes __metrics_path__ itself: write it decoded, or it is escaped twice.
            "__metrics_path__": urllib.parse.unquote(_with_slash(url.path)) + "metrics",
            "instance": server.instance,
            "user": server.user,
        }
        if server.name:
            labels["server_name"] = server.name
        groups.append({"targets": [netloc], "labels": labels})
    return groups


def write_if_changed(path: Path, text: str) -> bool:
    """Replace ``path`` with ``text`` atomically (Prometheus never reads half a file); False if unchanged."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def update(hub_url: str, token: str, output: Path, address: str | None = None, timeout: float = 30.0) -> str:
    """List the ready servers once and write ``output``; return a one-line report."""
    servers = list_ready_servers(hub_url, token, timeout)
    text = json.dumps(target_groups(servers, hub_url, address), indent=2) + "\n"
    changed = write_if_changed(output, text)
    return f"{len(servers)} ready servers -> {output}" + ("" if changed else " (unchanged)")


def read_token(token_file: str | None) -> str:
    """The token from ``token_file``, else from ``$JUPYTERHUB_API_TOKEN`` (set for hub-managed services).

    Checked here, so that a bad token is reported by the rule it breaks, never
    shown: it must be one line of printable ASCII without spaces.
    """
    if token_file:
        # The path is never shown: a token given in its place would be printed.
        try:
            return TokenFile(token_file).read()
        except TokenFileError as e:
            raise FleetError(f"--token-file: the file {e}") from None
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "").strip()
    if not token:
        raise FleetError("no token: give --token-file or set JUPYTERHUB_API_TOKEN")
    problem = token_problem(token)
    if problem:
        raise FleetError(f"$JUPYTERHUB_API_TOKEN {problem}")
    return token


def redacted(text: str, token: str) -> str:
    """``text`` with every occurrence of ``token`` replaced, for messages from code we do not control."""
    return text.replace(token, "<token>") if token else text


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # an invalid port never equals a valid one
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rucio_metrics.fleet",
        description="Write a JupyterHub's ready single-user servers as Prometheus file_sd targets, "
        "scraped through the hub's proxy at <server url>metrics.",
    )
    parser.add_argument("--hub-url", required=True, help="the hub's public URL (its proxy), e.g. https://hub.example.org/")
    parser.add_argument(
        "--token-file", help="file holding this helper's hub API token, with list:users and read:servers and "
        "nothing else; never the token Prometheus sends to the servers, which every user can read "
        "(default: $JUPYTERHUB_API_TOKEN)",
    )
    parser.add_argument("--output", required=True, type=Path, help="the file_sd JSON file to write")
    parser.add_argument("--address", help="host:port Prometheus uses to reach the proxy (default: from --hub-url)")
    parser.add_argument(
        "--interval", type=float, default=0, help="seconds between updates; 0 (default) writes once and exits",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the Hub API (default: 30)")
    args = parser.parse_args(argv)

    if args.token_file and readable_by_others(args.token_file):
        print("rucio_metrics.fleet: warning: --token-file: the file may be read by its group or by anyone on "
              "the machine; make it readable by this helper's user alone (chmod 600)", file=sys.stderr, flush=True)
    while True:
        token = ""
        try:
            # Read the token each time, so a rotated token file is picked up.
            token = read_token(args.token_file)
            report = update(args.hub_url, token, args.output, args.address, args.timeout)
            print(f"rucio_metrics.fleet: {report}", file=sys.stderr, flush=True)
        except Exception as e:
            # Anything else is a defect, reported the same way: the last good file is kept (a hub
            # restart must not empty Prometheus' target list), and since the message may come from
            # code that saw the token, it is redacted and has no traceback.
            kind = "error" if isinstance(e, (FleetError, OSError)) else f"unexpected error: {type(e).__name__}"
            print(f"rucio_metrics.fleet: {kind}: {redacted(str(e), token)}", file=sys.stderr, flush=True)
            if not args.interval:
                return 1
        if not args.interval:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
