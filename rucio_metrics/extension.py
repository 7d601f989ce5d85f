"""The load hook: read the options, build the metrics, instrument routes now and later."""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from tornado.web import Application

from .config import RucioMetrics, load_options
from .instrument import instrument_app
from .instrument import log as instrument_log
from .metrics import Metrics
from .outbound import load_outbound
from .scrape_path import route_prometheus_spelling

# Apps whose add_handlers already re-instruments, so a second load does not wrap twice.
_hooked_apps: weakref.WeakSet[Application] = weakref.WeakSet()


def load(serverapp: Any, registry: CollectorRegistry = REGISTRY) -> RucioMetrics | None:
    """Instrument ``serverapp``'s Rucio routes; never raises, so the server always starts."""
    log: logging.Logger = serverapp.log
    if not instrument_log.handlers and instrument_log.parent is logging.root:
        # Like jupyter_server does for tornado's loggers: show our messages in the server log.
        instrument_log.parent = log
    try:
        options = load_options(serverapp, log)
        if not options.enabled:
            log.info("rucio_metrics: disabled by RucioMetrics.enabled = False")
            return options
        metrics = Metrics.on(registry, options.latency_metric, options.buckets)
        if metrics.latency_metric != options.latency_metric:
            log.warning(
                "rucio_metrics: RucioMetrics.latency_metric = %r is ignored: this process already "
                "exports the request duration as a %s", options.latency_metric, metrics.latency_metric,
            )
        web_app: Application = serverapp.web_app
        base_url: str = web_app.settings.get("base_url", "/")
        prefixes = list(options.route_prefixes)

        def instrument() -> None:
            labels = instrument_app(web_app, base_url, prefixes, metrics)
            if labels:
                log.info("rucio_metrics: instrumented %d routes: %s", len(labels), ", ".join(labels))

        instrument()
        reinstrument_on_add_handlers(web_app, instrument)
        if not metrics.route_labels():
            log.info(
                "rucio_metrics: no routes under %s yet; routes added later will be instrumented",
                ", ".join(prefixes),
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
        return options
    except Exception:
        log.exception("rucio_metrics: failed to load; the server runs without Rucio metrics")
        return None


def reinstrument_on_add_handlers(web_app: Application, instrument: Callable[[], None]) -> None:
    """Run ``instrument`` after every later ``web_app.add_handlers`` call.

    Extensions load in name order but may add routes at any time; this
    catches routes that appear after rucio_metrics loaded. Only this app
    instance's method is replaced, never Tornado's or jupyter_server's class.
    """
    if web_app in _hooked_apps:
        return
    _hooked_apps.add(web_app)
    add_handlers = web_app.add_handlers

    @functools.wraps(add_handlers)
    def add_handlers_then_instrument(host_pattern: str, host_handlers: Any) -> Any:
        result = add_handlers(host_pattern, host_handlers)
        try:
            instrument()
        except Exception:
            instrument_log.exception("rucio_metrics: instrumenting newly added routes failed")
        return result

    web_app.add_handlers = add_handlers_then_instrument  # type: ignore[method-assign]
