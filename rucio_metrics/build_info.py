"""What a server runs, as one gauge: ``rucio_metrics_build_info``, always 1, the versions in its labels.

Prometheus' ``*_build_info`` convention: across a fleet, ``count by (version)
(rucio_metrics_build_info)`` says how many servers run which rucio_metrics.
One series per process, whatever the traffic.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> info = BuildInfo.on(registry)
>>> registry.get_sample_value("rucio_metrics_build_info", info.labels)
1.0
>>> BuildInfo.on(registry) is info  # a second load finds it
True
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from . import __version__
from .metrics import OncePerRegistry

BUILD_INFO = "rucio_metrics_build_info"
BUILD_INFO_HELP = (
    "Versions of rucio_metrics, rucio-jupyterlab, jupyter_server and Python in this server; always 1. "
    "An empty rucio_jupyterlab_version: rucio-jupyterlab is not installed."
)
LABELS = ("version", "rucio_jupyterlab_version", "jupyter_server_version", "python_version")


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution``, or "" when it is not installed (or its metadata is broken)."""
    from importlib.metadata import version

    try:
        # Python 3.9 and 3.10 give None for metadata without a Version field.
        return str(version(distribution) or "")
    except Exception:  # PackageNotFoundError, or metadata that cannot be read
        return ""


def versions() -> dict[str, str]:
    """The label values of this process, read once: an upgrade on disk takes effect at the next start."""
    import jupyter_server

    return {
        "version": __version__,
        "rucio_jupyterlab_version": installed_version("rucio-jupyterlab"),
        "jupyter_server_version": str(jupyter_server.__version__),
        "python_version": platform.python_version(),
    }


class BuildInfo(OncePerRegistry):
    """``rucio_metrics_build_info`` on one registry; use ``BuildInfo.on(registry)``."""

    def __init__(self, registry: CollectorRegistry, latency_metric: str, buckets: Sequence[float]) -> None:
        self.labels = versions()
        # Built here, once: anything wrong shows at load, where it is caught, never at a scrape.
        self._family = GaugeMetricFamily(BUILD_INFO, BUILD_INFO_HELP, labels=LABELS)
        self._family.add_metric([self.labels[label] for label in LABELS], 1.0)
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        yield self._family

    def collect(self) -> Iterator[Metric]:
        yield self._family
