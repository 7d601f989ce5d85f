"""The ``RucioMetrics`` configurable: every option of rucio_metrics, validated."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from traitlets import Bool, CaselessStrEnum, Float, Integer, List, TraitError, Unicode, validate
from traitlets.config import Config, Configurable

from .buckets import DEFAULT_BUCKETS, histogram_bounds
from .time_to_data import DEFAULT_HORIZON_SECONDS, DEFAULT_MAX_WAITS

__all__ = ["DEFAULT_BUCKETS", "RucioMetrics", "load_options"]


# A prefix is matched as literal text at the start of a route's regex, so a
# regex metacharacter in it would silently match nothing (or too much).
_REGEX_CHARACTERS = re.compile(r"[\\^$.|?*+()\[\]{}]")

# JupyterHub's own rule for custom scope names (jupyterhub.scopes): a name the hub would refuse is refused here.
_CUSTOM_SCOPE = re.compile(r"^custom:[a-z0-9][a-z0-9_\-*:]+[a-z0-9_*]$")

# Options whose value is never written to the log: a token pasted where a path belongs would be.
_NOT_SHOWN = frozenset({"metrics_token_file"})


class RucioMetrics(Configurable):
    """Options of the rucio_metrics server extension.

    Set them like any Jupyter server option::

        # jupyter_server_config.py
        c.RucioMetrics.latency_metric = "histogram"
        c.RucioMetrics.buckets = [0.1, 0.5, 1, 5, 30]

    or ``jupyter server --RucioMetrics.enabled=False``.
    """

    enabled = Bool(
        True,
        help="""Instrument the Rucio routes. Default: True.
        Example: c.RucioMetrics.enabled = False turns rucio_metrics off without uninstalling it.""",
    ).tag(config=True)

    route_prefixes = List(
        Unicode(),
        default_value=["rucio-jupyterlab"],
        help="""Path prefixes, relative to the server's base_url, whose routes are instrumented.
        Plain path text, no regex characters. Default: ["rucio-jupyterlab"].
        Example: c.RucioMetrics.route_prefixes = ["rucio-jupyterlab", "my-extension"]""",
    ).tag(config=True)

    latency_metric = CaselessStrEnum(
        ["summary", "histogram"],
        default_value="summary",
        help="""Type of the request duration metrics: "summary" (count and sum, cheapest) or
        "histogram" (adds buckets, so Prometheus can compute quantiles). Default: "summary".
        Example: c.RucioMetrics.latency_metric = "histogram" """,
    ).tag(config=True)

    buckets = List(
        default_value=list(DEFAULT_BUCKETS),
        help=f"""Histogram bucket upper bounds in seconds, strictly increasing and positive
        (+Inf is added). Used only when latency_metric is "histogram".
        Default: {list(DEFAULT_BUCKETS)}.
        Example: c.RucioMetrics.buckets = [0.1, 0.5, 1, 5, 30]""",
    ).tag(config=True)

    outbound_enabled = Bool(
        True,
        help="""Also measure the calls the Rucio extension makes to its Rucio servers
        (rucio_jupyterlab_rucio_* metrics). Default: True.
        Example: c.RucioMetrics.outbound_enabled = False""",
    ).tag(config=True)

    transfers_enabled = Bool(
        True,
        help="""Also measure the downloads and uploads users start from JupyterLab
        (rucio_jupyterlab_transfer* metrics). Default: True.
        Example: c.RucioMetrics.transfers_enabled = False""",
    ).tag(config=True)

    time_to_data_enabled = Bool(
        True,
        help="""Also measure how long users wait for their data after "Make available", and how often it
        never comes (rucio_jupyterlab_time_to_data_* metrics): in replica mode until the extension itself
        reports every file of the DID available or its rule stuck, in download mode until the download
        ends (that needs transfers_enabled). Adds no call to Rucio. Default: True.
        Example: c.RucioMetrics.time_to_data_enabled = False""",
    ).tag(config=True)

    time_to_data_horizon_seconds = Float(
        DEFAULT_HORIZON_SECONDS,
        min=1.0,
        help="""A wait for data (replica mode) that nobody looked at again for this many seconds ends with
        the outcome "unobserved", counted to its last look: the user closed the panel or left. Waits are
        checked when looked at and every quarter of this (1 s to 60 s). Default: 3600.0.
        Example: c.RucioMetrics.time_to_data_horizon_seconds = 7200""",
    ).tag(config=True)

    time_to_data_max_waits = Integer(
        DEFAULT_MAX_WAITS,
        min=1,
        help="""Waits for data (replica mode) tracked at once, at most (each holds its DID and two times,
        well under 1 KiB). Over it the wait looked at least recently is dropped, unended, and counted in
        rucio_jupyterlab_time_to_data_waits_dropped_total. Default: 10000.
        Example: c.RucioMetrics.time_to_data_max_waits = 50000""",
    ).tag(config=True)

    hub_metrics_scope = Unicode(
        "custom:rucio-metrics:read:metrics",
        help="""Under JupyterHub, <base_url>metrics also admits a hub token whose scopes include this
        custom scope, which opens nothing else of the server (JupyterHub's own access check refuses
        it everywhere else). A custom scope exists only once the hub admin defines it
        (c.JupyterHub.custom_scopes) and grants it: until then no token holds it, so installing
        rucio_metrics widens no credential. Built-in scopes (read:metrics, which also guards
        /hub/metrics) are refused. Empty turns it off. Default: "custom:rucio-metrics:read:metrics".
        Example: c.RucioMetrics.hub_metrics_scope = "" """,
    ).tag(config=True)

    hub_token_cache_seconds = Float(
        300.0,
        min=0.0,
        help="""Seconds the hub's answer about a scrape token is kept: a revoked token still reads
        metrics this long after its revocation, and the hub is asked about each token once per
        period and server (at 1,000 servers and 60 s, about 17 questions a second). 0 asks at every
        scrape. Default: 300 (JupyterHub's own HubAuth.cache_max_age).
        Example: c.RucioMetrics.hub_token_cache_seconds = 60""",
    ).tag(config=True)

    metrics_port = Integer(
        0,
        min=0,
        max=65535,
        help="""Port of a metrics listener of rucio_metrics' own, beside the server's port: GET /metrics
        there serves the same text as <base_url>metrics (the process's whole default registry).
        The hub's proxy never routes to it. 0 means no listener. Default: 0.
        Example: c.RucioMetrics.metrics_port = 9101""",
    ).tag(config=True)

    metrics_ip = Unicode(
        "127.0.0.1",
        help="""Address the metrics listener binds (with metrics_port). "" and "*" bind every
        address of the machine (IPv4 and IPv6), like "0.0.0.0" and "::". Default: "127.0.0.1".
        Example: c.RucioMetrics.metrics_ip = "0.0.0.0" (in a pod that Prometheus scrapes)""",
    ).tag(config=True)

    metrics_token_file = Unicode(
        "",
        help="""File holding the bearer token the metrics listener asks for (one line of at least 16
        printable characters); re-read when it changes. Keep it readable by the server's user alone
        (mode 0600): a group- or other-readable file is warned about. Empty: the listener asks for
        none, so only a network policy may gate it. A file that is missing, empty or too short keeps
        the listener off. The value is never shown in the log. Default: "".
        Example: c.RucioMetrics.metrics_token_file = "/etc/jupyter/metrics-token" """,
    ).tag(config=True)

    @validate("route_prefixes")
    def _valid_prefixes(self, proposal: dict[str, Any]) -> list[str]:
        prefixes = [str(p).strip("/") for p in proposal["value"]]
        if not prefixes:
            raise TraitError("at least one prefix is needed")
        for prefix in prefixes:
            if not prefix:
                raise TraitError("a prefix may not be empty or '/'")
            if _REGEX_CHARACTERS.search(prefix):
                raise TraitError(f"prefix {prefix!r} contains a regex character")
        return prefixes

    @validate("hub_metrics_scope")
    def _valid_hub_scope(self, proposal: dict[str, Any]) -> str:
        scope = str(proposal["value"]).strip()
        if scope and not _CUSTOM_SCOPE.match(scope):
            raise TraitError(
                "not a JupyterHub custom scope (custom:<name>, lower case): a built-in scope such as "
                "read:metrics is held by tokens issued for other things, which would then read every "
                "server's metrics"
            )
        return scope

    @validate("hub_token_cache_seconds", "time_to_data_horizon_seconds")
    def _valid_seconds(self, proposal: dict[str, Any]) -> float:
        seconds = float(proposal["value"])
        if not math.isfinite(seconds):
            raise TraitError("must be a finite number of seconds")
        return seconds

    @validate("buckets")
    def _valid_buckets(self, proposal: dict[str, Any]) -> list[float]:
        # The function that builds the histogram's bounds checks them: accepted here means it cannot fail later.
        try:
            return histogram_bounds(proposal["value"])[:-1]
        except ValueError as e:
            raise TraitError(str(e)) from None


def load_options(parent: Configurable, log: logging.Logger) -> RucioMetrics:
    """Build ``RucioMetrics`` from ``parent``'s config, dropping invalid options.

    A bad value is logged as an error naming the option and the value, and
    the option keeps its default, so a typo never stops the server.
    """
    section = parent.config.get(RucioMetrics.__name__, Config())
    valid = Config()
    for name, value in section.items():
        try:
            RucioMetrics(config=Config({RucioMetrics.__name__: {name: value}}))
        except TraitError as e:
            trait = RucioMetrics.class_traits()[name]
            shown, reason = _shown(value), str(e)
            if name in _NOT_SHOWN:
                # traitlets' own message quotes the value too.
                shown, reason = _Hidden(), f"expected {trait.info()}"
            log.error(
                "rucio_metrics: invalid option RucioMetrics.%s = %r: %s. Using the default %r.",
                name, shown, reason, trait.default(),
            )
            continue
        valid[name] = value
    return RucioMetrics(parent=parent, config=Config({RucioMetrics.__name__: valid}))


class _Hidden:
    def __repr__(self) -> str:
        return "<not shown>"


def _shown(value: Any) -> Any:
    # Values from the command line arrive as DeferredConfigString; show the text.
    return str(value) if type(value).__name__.startswith("Deferred") else value
