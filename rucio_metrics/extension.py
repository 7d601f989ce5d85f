"""The load hook: read the options, build the metrics, instrument routes now and later."""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from tornado.httpserver import HTTPServer
from tornado.web import Application

from .build_info import BuildInfo
from .config import RucioMetrics, load_options
from .hub_scope import admit_hub_scope, hub_auth_of
from .instrument import instrument_app
from .instrument import log as instrument_log
from .metrics import Metrics
from .metrics_listener import start_metrics_listener
from .outbound import load_outbound
from .scrape_path import route_prometheus_spelling
from .time_to_data import load_time_to_data
from .transfers import load_transfers

# Per app: the options of its latest load, and what its add_handlers hook runs.
_loads: weakref.WeakKeyDictionary[Application, _AppLoad] = weakref.WeakKeyDictionary()


class _AppLoad:
    """The latest load of rucio_metrics into one app; the add_handlers hook reads it each time."""

    def __init__(self) -> None:
        self.options: RucioMetrics | None = None
        self.instrument: Callable[[], None] = lambda: None
        self.hooked = False  # add_handlers already runs ``instrument``
        self.listener: HTTPServer | None = None


def load(serverapp: Any, registry: CollectorRegistry = REGISTRY) -> RucioMetrics | None:
    """Instrument ``serverapp``'s Rucio routes; never raises, so the server always starts."""
    log: logging.Logger = serverapp.log
    if not instrument_log.handlers and instrument_log.parent is logging.root:
        # Like jupyter_server does for tornado's loggers: show our messages in the server log.
        instrument_log.parent = log
    try:
        options = load_options(serverapp, log)
        web_app: Application = serverapp.web_app
        state = _loads.get(web_app)
        if state is None:
            state = _loads[web_app] = _AppLoad()
        if state.options is not None:
            warn_unchangeable(state.options, options, log)
        state.options = options
        if not options.enabled:
            log.info("rucio_metrics: disabled by RucioMetrics.enabled = False")
            return options
        metrics = Metrics.on(registry, options.latency_metric, options.buckets)
        try:
            BuildInfo.on(registry)
        except Exception:
            log.warning("rucio_metrics: could not export rucio_metrics_build_info", exc_info=True)
        warn_fixed_by_metrics(metrics, options, log)
        base_url: str = web_app.settings.get("base_url", "/")
        prefixes = list(options.route_prefixes)

        def instrument() -> None:
            labels = instrument_app(web_app, base_url, prefixes, metrics)
            if labels:
                log.info("rucio_metrics: instrumented %d routes: %s", len(labels), ", ".join(labels))

        # The hook runs the latest load's function, so routes added later follow the current prefixes.
        state.instrument = instrument
        reinstrument_on_add_handlers(web_app, state)
        try:
            instrument()
        except Exception:
            # instrumented_routes is exported all the same (0 here), so the alert on it fires.
            log.exception("rucio_metrics: instrumenting the routes failed; requests are served unmeasured")
        if not metrics.route_labels():
            log.info(
                "rucio_metrics: no routes under %s yet; routes added later will be instrumented",
                ", ".join(prefixes),
            )
        # Before the alias below, which routes whatever handler serves <base_url>metrics.
        admit_metrics_scope(serverapp, web_app, base_url, options, log)
        if options.metrics_port and state.listener is None:
            state.listener = start_metrics_listener(
                options.metrics_ip, options.metrics_port, options.metrics_token_file, log, registry,
            )
        try:
            alias = route_prometheus_spelling(web_app, base_url)
        except Exception:
            log.warning("rucio_metrics: could not route the metrics endpoint at Prometheus' spelling", exc_info=True)
        else:
            if alias:
                log.info(
                    "rucio_metrics: %smetrics also answers at %s, the path Prometheus requests for it",
                    base_url, alias,
                )
        if options.outbound_enabled:
            # The same duration type and buckets as the inbound side, so the two compare directly.
            load_outbound(registry, metrics.latency_metric, metrics.buckets, serverapp.config, log)
        transfers = load_transfers(registry, metrics.latency_metric, serverapp.config, log) \
            if options.transfers_enabled else None
        if options.time_to_data_enabled:
            load_time_to_data(registry, options.time_to_data_horizon_seconds, options.time_to_data_max_waits,
                              transfers, serverapp.config, log)
        return options
    except Exception:
        log.exception("rucio_metrics: failed to load; the server runs without Rucio metrics")
        return None


def admit_metrics_scope(
    serverapp: Any, web_app: Application, base_url: str, options: RucioMetrics, log: logging.Logger,
) -> None:
    """Under JupyterHub, let <base_url>metrics admit hub tokens with ``hub_metrics_scope``."""
    scope = options.hub_metrics_scope
    if not scope or hub_auth_of(serverapp) is None:
        return  # not asked for, or no hub to ask
    try:
        admitted = admit_hub_scope(web_app, base_url, scope, options.hub_token_cache_seconds)
    except Exception:
        log.warning("rucio_metrics: RucioMetrics.hub_metrics_scope = %r could not be set up", scope, exc_info=True)
        return
    if admitted:
        log.info(
            "rucio_metrics: %smetrics also admits hub tokens with the scope %s, and they open nothing else; "
            "the hub's answer about a token is kept %g s", base_url, scope, options.hub_token_cache_seconds,
        )
    else:
        log.warning("rucio_metrics: RucioMetrics.hub_metrics_scope = %r: no metrics handler at %smetrics",
                    scope, base_url)


def warn_fixed_by_metrics(metrics: Metrics, options: RucioMetrics, log: logging.Logger) -> None:
    """Warn for the duration options the registry's metric families already fixed in this process."""
    if metrics.latency_metric != options.latency_metric:
        log.warning(
            "rucio_metrics: RucioMetrics.latency_metric = %r is ignored: this process already "
            "exports the request duration as a %s", options.latency_metric, metrics.latency_metric,
        )
    elif metrics.latency_metric == "histogram" and tuple(options.buckets) != metrics.buckets:
        log.warning(
            "rucio_metrics: RucioMetrics.buckets = %r is ignored: this process already exports "
            "the request duration histogram with buckets %r", list(options.buckets), list(metrics.buckets),
        )


def warn_unchangeable(before: RucioMetrics, now: RucioMetrics, log: logging.Logger) -> None:
    """Warn for each option whose change a second load in a running process cannot carry out."""
    if not before.enabled:
        return  # nothing was instrumented: every option takes effect now
    if not now.enabled:
        log.warning(
            "rucio_metrics: RucioMetrics.enabled = False is ignored for the routes already instrumented: "
            "they stay measured until the server restarts",
        )
    removed = [p for p in before.route_prefixes if p not in now.route_prefixes]
    if removed:
        log.warning(
            "rucio_metrics: RucioMetrics.route_prefixes no longer has %s: routes already instrumented "
            "there stay measured until the server restarts", ", ".join(removed),
        )
    if before.outbound_enabled and not now.outbound_enabled:
        log.warning(
            "rucio_metrics: RucioMetrics.outbound_enabled = False is ignored: calls to Rucio are already "
            "measured in this process until the server restarts",
        )
    if before.time_to_data_enabled and not now.time_to_data_enabled:
        log.warning(
            "rucio_metrics: RucioMetrics.time_to_data_enabled = False is ignored: waits for data are already "
            "measured in this process until the server restarts",
        )


def reinstrument_on_add_handlers(web_app: Application, state: _AppLoad) -> None:
    """Run ``state.instrument`` after every later ``web_app.add_handlers`` call.

    Extensions load in name order but may add routes at any time; this
    catches routes that appear after rucio_metrics loaded. Only this app
    instance's method is replaced, never Tornado's or jupyter_server's
    class, and only once: a later load only changes ``state``.
    """
    if state.hooked:
        return
    state.hooked = True
    add_handlers = web_app.add_handlers

    @functools.wraps(add_handlers)
    def add_handlers_then_instrument(host_pattern: str, host_handlers: Any) -> Any:
        result = add_handlers(host_pattern, host_handlers)
        try:
            state.instrument()
        except Exception:
            instrument_log.exception("rucio_metrics: instrumenting newly added routes failed")
        return result

    web_app.add_handlers = add_handlers_then_instrument  # type: ignore[method-assign]
