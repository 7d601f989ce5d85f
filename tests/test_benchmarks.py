"""The benchmarks still run and measure what they say (quick mode, in-process only; no timing assertions)."""

from __future__ import annotations

import asyncio
import math
import sys

from prometheus_client import CollectorRegistry

from .jupyter_server_process import REPO

sys.path.insert(0, str(REPO))  # benchmarks/ sits beside the package, it is not installed

from benchmarks import hot_path, run, scrape

ROUTE = {"handler": "/rucio-jupyterlab/instances", "method": "GET"}


def test_the_in_process_requests_run_to_their_end(registry: CollectorRegistry):
    asyncio.run(hot_path.serve(hot_path.rucio_metrics_app("summary", registry), 250))
    assert registry.get_sample_value("rucio_jupyterlab_http_requests_total", {**ROUTE, "status_code": "200"}) == 250
    assert registry.get_sample_value("rucio_jupyterlab_http_request_duration_seconds_count", ROUTE) == 250
    assert registry.get_sample_value("rucio_jupyterlab_http_requests_in_progress", ROUTE) == 0


def test_hot_path_reports_every_variant_with_numbers():
    results = {r.name: r for r in hot_path.run(rounds=2, requests=100, profiled_requests=20)}
    assert list(results) == [
        "plain", "upstream decorator", "jupyter_server histogram", "prometheus_client floor",
        "rucio_metrics (summary)", "rucio_metrics (histogram)",
    ]
    for r in results.values():
        assert r.us_per_request > 0 and math.isfinite(r.added_us) and r.ratio > 0
        assert r.calls_per_request > 100
    # Call counts are deterministic: every instrumented variant does some work, the plain one none.
    assert results["plain"].added_calls == 0
    assert all(r.added_calls > 0 for name, r in results.items() if name != "plain")


def test_scrape_renders_every_route_verb_and_status():
    summary, histogram = scrape.measure(renders=3)
    pairs = sum(len(methods) for methods in scrape.ROUTES.values())
    assert len(scrape.ROUTES) == 16
    assert summary.series > pairs * len(scrape.STATUSES)
    assert histogram.series > summary.series and histogram.bytes > summary.bytes > 0
    assert summary.ms_per_render > 0


def test_the_quick_report_prints_tables_and_targets(capsys):
    assert run.main(["--quick", "--in-process-only"]) == 0
    report = capsys.readouterr().out
    assert "| rucio_metrics (summary) |" in report
    assert "| rucio_metrics families only, histogram |" in report
    assert "added CPU per request in-process ≤ 3 µs" in report
    assert "Machine: " in report
