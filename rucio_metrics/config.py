"""The ``RucioMetrics`` configurable: every option of rucio_metrics, validated."""

from __future__ import annotations

import logging
import re
from typing import Any

from traitlets import Bool, CaselessStrEnum, Integer, List, TraitError, Unicode, validate
from traitlets.config import Config, Configurable

from .buckets import DEFAULT_BUCKETS, histogram_bounds

__all__ = ["DEFAULT_BUCKETS", "RucioMetrics", "load_options"]


# A prefix is matched as literal text at the start of a route's regex, so a
# regex metacharacter in it would silently match nothing (or too much).
_REGEX_CHARACTERS = re.compile(r"[\\^$.|?*+()\[\]{}]")


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

    hub_metrics_scope = Unicode(
        "read:metrics",
        help="""Under JupyterHub, <base_url>metrics also answers a hub token whose scopes include
        this one, while that token still opens nothing else of the server (JupyterHub's own
        access check refuses it everywhere else). The hub is asked once per token and cache
        period, through the server's own HubAuth. Empty turns it off. Default: "read:metrics".
        Example: c.RucioMetrics.hub_metrics_scope = "" """,
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
        help="""Address the metrics listener binds (with metrics_port). Default: "127.0.0.1".
        Example: c.RucioMetrics.metrics_ip = "0.0.0.0" (in a pod that Prometheus scrapes)""",
    ).tag(config=True)

    metrics_token_file = Unicode(
        "",
        help="""File holding the bearer token the metrics listener asks for (one line); re-read when it
        changes. Empty: the listener asks for none, so only a network policy may gate it.
        A file that is missing or empty keeps the listener off. Default: "".
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
            default = RucioMetrics.class_traits()[name].default()
            log.error(
                "rucio_metrics: invalid option RucioMetrics.%s = %r: %s. Using the default %r.",
                name, _shown(value), e, default,
            )
            continue
        valid[name] = value
    return RucioMetrics(parent=parent, config=Config({RucioMetrics.__name__: valid}))


def _shown(value: Any) -> Any:
    # Values from the command line arrive as DeferredConfigString; show the text.
    return str(value) if type(value).__name__.startswith("Deferred") else value
