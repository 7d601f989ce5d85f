"""Under JupyterHub, let ``<base_url>metrics`` answer a hub token with a custom scope, and nothing else open.

A single-user server admits a hub token that grants ``access:servers`` on
it, and that grant opens everything: kernels, files, the user's stored
Rucio password. JupyterHub has no scope for a single-user server's metrics
(its own ``read:metrics`` guards ``/hub/metrics`` and is held by tokens
issued for that), so the hub admin defines one, a custom scope
(``c.JupyterHub.custom_scopes``), and grants it to Prometheus alone. The
metrics handler, and only it, is replaced by a subclass that also admits a
token holding that scope; every other handler keeps JupyterHub's access
check, which refuses such a token. No token holds a custom scope the hub
never defined, so installing rucio_metrics widens no credential.

The hub is asked about a token at most once per ``cache_seconds``: a
revoked token is refused that long after its revocation at the latest.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from tornado.web import Application, RequestHandler

from .routes import app_rules, path_pattern
from .scrape_path import metrics_path

log = logging.getLogger("rucio_metrics")

# Tokens remembered at most: Prometheus sends one; a stream of made-up tokens must not grow the process.
MAX_TOKENS = 256


def hub_auth_of(serverapp: Any) -> Any | None:
    """The server's ``HubAuth`` when it runs under JupyterHub (``jupyterhub-singleuser``), else None."""
    identity_provider = getattr(serverapp, "identity_provider", None)
    hub_auth = getattr(identity_provider, "hub_auth", None)
    return hub_auth if hasattr(hub_auth, "user_for_token") else None


class TokenVerdicts:
    """What the hub said about each token lately: whether it holds the scope, and whether it opens the server.

        verdicts = TokenVerdicts(cache_seconds=300)
        verdicts.get(token)              # None: ask the hub
        verdicts.put(token, True, False)

    Keyed by the token's SHA-256, never the token; at most ``MAX_TOKENS`` kept.
    """

    def __init__(self, cache_seconds: float, clock: Any = time.monotonic) -> None:
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._verdicts: dict[str, tuple[float, bool, bool]] = {}

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()

    def get(self, token: str) -> tuple[bool, bool] | None:
        """``(has_scope, opens_server)`` if asked within ``cache_seconds``, else None."""
        found = self._verdicts.get(self.key(token))
        if found is None or self.clock() - found[0] >= self.cache_seconds:
            return None
        return found[1], found[2]

    def put(self, token: str, has_scope: bool, opens_server: bool) -> None:
        now = self.clock()
        key = self.key(token)
        self._verdicts.pop(key, None)
        if len(self._verdicts) >= MAX_TOKENS:
            self._verdicts = {k: v for k, v in self._verdicts.items() if now - v[0] < self.cache_seconds}
            while len(self._verdicts) >= MAX_TOKENS:  # the oldest first: dicts keep insertion order
                del self._verdicts[next(iter(self._verdicts))]
        self._verdicts[key] = (now, has_scope, opens_server)


def admit_hub_scope(web_app: Application, base_url: str, scope: str, cache_seconds: float) -> bool:
    """Let the handler at ``<base_url>metrics`` also admit hub tokens with ``scope``; False if none is there."""
    path = metrics_path(base_url)
    done = False
    for rule in app_rules(web_app):
        if path_pattern(rule) != path:
            continue
        if not getattr(rule.target, "_rucio_metrics_scope", None):
            rule.target = scoped_metrics_class(rule.target, scope, cache_seconds)
        else:
            # A second load: the latest options hold, and what the hub said under the old ones is forgotten.
            rule.target._rucio_metrics_scope = scope
            rule.target._rucio_metrics_verdicts = TokenVerdicts(cache_seconds)
        done = True
    return done


def scoped_metrics_class(base: type[RequestHandler], scope: str, cache_seconds: float) -> type[RequestHandler]:
    """A subclass of jupyter_server's metrics handler that also admits a hub token with ``scope``.

    It keeps the original's name and module, so jupyter_server's own
    ``handler`` label and auth markers stay as they were.
    """

    class HubScopedMetricsHandler(base):  # type: ignore[valid-type,misc]
        _rucio_metrics_scope = scope
        _rucio_metrics_verdicts = TokenVerdicts(cache_seconds)
        _rucio_metrics_reader = False

        async def prepare(self, *args: Any, **kwargs: Any) -> None:
            self._rucio_metrics_reader = await _has_scope(
                self, self._rucio_metrics_scope, self._rucio_metrics_verdicts,
            )
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


async def _has_scope(handler: Any, scope: str, verdicts: TokenVerdicts) -> bool:
    """Whether the request's hub token has ``scope``; never raises (a failure refuses the scrape)."""
    try:
        hub_auth = handler.identity_provider.hub_auth
        token = hub_auth.get_token(handler, in_cookie=False)
        if not token:
            return False
        verdict = verdicts.get(token)
        if verdict is None:
            # Not HubAuth's cache, which keeps an answer for its own cache_max_age whatever we were told.
            model = await hub_auth.user_for_token(token, use_cache=False, sync=False)
            has_scope = bool(model) and bool(hub_auth.check_scopes({scope}, model))
            opens_server = bool(model) and bool(hub_auth.check_scopes(hub_auth.access_scopes, model))
            verdicts.put(token, has_scope, opens_server)
            verdict = has_scope, opens_server
    except Exception as e:
        # HubAuth's errors name the hub's URL, never the token; the class and that text only.
        log.error(
            "rucio_metrics: RucioMetrics.hub_metrics_scope = %r: could not ask the hub whether the token has it "
            "(%s: %s); the scrape is refused", scope, type(e).__name__, getattr(e, "log_message", None) or e,
        )
        return False
    has_scope, opens_server = verdict
    if not has_scope:
        return False
    if not opens_server:
        # What JupyterHub's identity provider would conclude for this token (no access): set it
        # beforehand, which spares the hub a second question and the log a "Not allowing" warning per scrape.
        handler._jupyterhub_user = None
    return True
