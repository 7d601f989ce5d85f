"""Answer ``<base_url>metrics`` also at the spelling of that path Prometheus requests.

JupyterHub URL-escapes user and server names in a server's ``base_url``
with Python's rules (``first+last`` becomes ``first%2Blast``); Prometheus
builds the request path from ``__metrics_path__`` with Go's, which leave
``$&+,:;=@`` unescaped. Tornado matches the raw path, so without help the
server of ``first+last`` answers Prometheus' ``/user/first+last/metrics``
with 404, whatever the target file or the relabelling says. Where the two
spellings differ, jupyter_server's own metrics handler is also routed at
Prometheus' spelling: the same handler, the same authentication.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from tornado.web import Application, RequestHandler

from .routes import app_rules, path_pattern

# What Go's net/url leaves unescaped in a path besides letters, digits and "-._~".
_GO_PATH_SAFE = "/$&+,:;=@"


def prometheus_spelling(path: str) -> str:
    """``path`` as Prometheus sends it: decoded, then escaped by Go's rules for a URL path.

    >>> prometheus_spelling("/user/first%2Blast@example.org/metrics")
    '/user/first+last@example.org/metrics'
    >>> prometheus_spelling("/user/j%C3%BCrgen/metrics")
    '/user/j%C3%BCrgen/metrics'
    """
    return quote(unquote(path), safe=_GO_PATH_SAFE)


def metrics_path(base_url: str) -> str:
    """jupyter_server's metrics path for ``base_url``: ``/user/alice/metrics``."""
    return "/" + "/".join(part for part in (base_url.strip("/"), "metrics") if part)


def route_prometheus_spelling(web_app: Application, base_url: str) -> str | None:
    """Route the metrics handler at Prometheus' spelling of its path; that path, or None when not needed.

    Not needed when the spellings agree (every name without ``$&+,:;=``) or
    when this server has no metrics handler at ``<base_url>metrics``.
    """
    path = metrics_path(base_url)
    alias = prometheus_spelling(path)
    if alias == path:
        return None
    # jupyter_server routes its path as a regex unescaped; ours is escaped ("+" is a quantifier).
    handler = _handler_at(web_app, path)
    if handler is None or _handler_at(web_app, re.escape(alias)) is not None:
        return None
    web_app.add_handlers(".*$", [(re.escape(alias), handler)])
    return alias


def _handler_at(web_app: Application, pattern: str) -> type[RequestHandler] | None:
    for rule in app_rules(web_app):
        if path_pattern(rule) == pattern:
            target: type[RequestHandler] = rule.target
            return target
    return None
