"""Find the Tornado rules under a path prefix, and the route label of each.

Extensions register with ``web_app.add_handlers(host_pattern, ...)``, which
nests an ``_ApplicationRouter`` inside ``default_router`` (and, with a
``default_host``, inside ``wildcard_router`` too), so the walk descends into
every router it meets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tornado.routing import PathMatches, Router, Rule
from tornado.web import Application, RequestHandler


def iter_rules(router: object, seen: set[int] | None = None) -> Iterator[Rule]:
    """Every rule below ``router`` whose target is a handler class, depth first, once each.

    ``default_router`` reaches ``wildcard_router`` through a catch-all rule,
    so routers are remembered in ``seen`` and walked once.
    """
    seen = set() if seen is None else seen
    if id(router) in seen:
        return
    seen.add(id(router))
    for rule in getattr(router, "rules", ()):
        target = rule.target
        if isinstance(target, type) and issubclass(target, RequestHandler):
            yield rule
        elif isinstance(target, Router):
            yield from iter_rules(target, seen)


def app_rules(app: Application) -> Iterator[Rule]:
    """Handler rules of both of the application's routers."""
    seen: set[int] = set()
    yield from iter_rules(app.default_router, seen)
    yield from iter_rules(app.wildcard_router, seen)


def path_pattern(rule: Rule) -> str | None:
    """The rule's path regex without anchors, or None if it does not match on the path."""
    if not isinstance(rule.matcher, PathMatches):
        return None
    pattern = rule.matcher.regex.pattern
    return pattern.removeprefix("^").removesuffix("$")


def prefix_paths(base_url: str, prefixes: Iterable[str]) -> tuple[str, ...]:
    """The absolute path each prefix covers, e.g. ``/user/a/rucio-jupyterlab/``."""
    base = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
    return tuple(base + prefix.strip("/") + "/" for prefix in prefixes)


def route_label(pattern: str, base_url: str) -> str:
    """The route template relative to ``base_url``, starting with ``/``.

    >>> route_label("/user/alice/rucio-jupyterlab/did/make-available", "/user/alice/")
    '/rucio-jupyterlab/did/make-available'
    """
    base = "/" + base_url.strip("/") if base_url.strip("/") else ""
    return pattern[len(base):] if base and pattern.startswith(base + "/") else pattern


def rules_under(app: Application, base_url: str, prefixes: Iterable[str]) -> Iterator[tuple[Rule, str]]:
    """Each handler rule under one of ``prefixes`` or at one exactly, with its route label.

    ``my-extension`` covers ``<base_url>my-extension`` and what is below it, not ``my-extension-admin``.
    """
    paths = prefix_paths(base_url, prefixes)
    exact = {path.removesuffix("/") for path in paths}
    for rule in app_rules(app):
        pattern = path_pattern(rule)
        if pattern is not None and (pattern.startswith(paths) or pattern in exact):
            yield rule, route_label(pattern, base_url)
