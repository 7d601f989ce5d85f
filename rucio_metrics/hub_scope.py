"""Under JupyterHub, let ``<base_url>metrics`` answer a hub token with ``read:metrics``, and nothing else open.

A single-user server admits a hub token that grants ``access:servers`` on
it, and that grant opens everything: kernels, files, the user's stored
Rucio password. JupyterHub has no scope for a single-user server's metrics;
its own ``read:metrics`` guards only ``/hub/metrics``. So the metrics
handler, and only it, is replaced by a subclass that also admits a token
whose scopes include the configured one. Every other handler keeps
JupyterHub's access check, which refuses such a token.

The token is resolved with the server's own ``HubAuth``, whose cache
JupyterHub's identity provider fills for the same request: one question to
the hub per token and cache period (5 minutes by default), however often
Prometheus scrapes.
"""

from __future__ import annotations

import logging
from typing import Any

from tornado.web import Application, RequestHandler

from .routes import app_rules, path_pattern
from .scrape_path import metrics_path

log = logging.getLogger("rucio_metrics")


def hub_auth_of(serverapp: Any) -> Any | None:
    """The server's ``HubAuth`` when it runs under JupyterHub (``jupyterhub-singleuser``), else None."""
    identity_provider = getattr(serverapp, "identity_provider", None)
    hub_auth = getattr(identity_provider, "hub_auth", None)
    return hub_auth if hasattr(hub_auth, "user_for_token") else None


def admit_hub_scope(web_app: Application, base_url: str, scope: str) -> bool:
    """Let the handler at ``<base_url>metrics`` also admit hub tokens with ``scope``; False if none is there."""
    path = metrics_path(base_url)
    done = False
    for rule in app_rules(web_app):
        if path_pattern(rule) != path:
            continue
        if not getattr(rule.target, "_rucio_metrics_scope", None):
            rule.target = scoped_metrics_class(rule.target, scope)
        else:
            rule.target._rucio_metrics_scope = scope  # a second load: the latest option holds
        done = True
    return done


def scoped_metrics_class(base: type[RequestHandler], scope: str) -> type[RequestHandler]:
    """A subclass of jupyter_server's metrics handler that also admits a hub token with ``scope``.

    It keeps the original's name and module, so jupyter_server's own
    ``handler`` label and auth markers stay as they were.
    """

    class HubScopedMetricsHandler(base):  # type: ignore[valid-type,misc]
        _rucio_metrics_scope = scope
        _rucio_metrics_reader = False

        async def prepare(self, *args: Any, **kwargs: Any) -> None:
            self._rucio_metrics_reader = await _has_scope(self, self._rucio_metrics_scope)
            result = super().prepare(*args, **kwargs)
            if result is not None:
                await result

        @property
        def logged_in(self) -> bool:
            # The one thing PrometheusMetricsHandler.get asks before it serves.
            return bool(super().logged_in or self._rucio_metrics_reader)

    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        setattr(HubScopedMetricsHandler, attr, getattr(base, attr))
    return HubScopedMetricsHandler


async def _has_scope(handler: Any, scope: str) -> bool:
    """Whether the request's hub token has ``scope``; never raises (a failure refuses the scrape)."""
    try:
        hub_auth = handler.identity_provider.hub_auth
        token = hub_auth.get_token(handler, in_cookie=False)
        if not token:
            return False
        # The same cache key JupyterHub's identity provider uses for this request: one lookup for both.
        model = await hub_auth.user_for_token(token, session_id=hub_auth.get_session_id(handler), sync=False)
    except Exception as e:
        # HubAuth's errors name the hub's URL, never the token; the class and that text only.
        log.error(
            "rucio_metrics: RucioMetrics.hub_metrics_scope = %r: could not ask the hub whether the token has it "
            "(%s: %s); the scrape is refused", scope, type(e).__name__, getattr(e, "log_message", None) or e,
        )
        return False
    if not model or not hub_auth.check_scopes({scope}, model):
        return False
    if not hub_auth.check_scopes(hub_auth.access_scopes, model):
        # What JupyterHub's identity provider would conclude for this token (no access): set it
        # beforehand, which spares the server's log its "Not allowing" warning on every scrape.
        handler._jupyterhub_user = None
    return True
