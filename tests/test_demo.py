"""The README's main job, scripts/demo.py: a real Rucio server, the raw series and, after them, the same counts
through Prometheus."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from .servers.jupyter_server_process import REPO
from .support.durations import (
    HTTP_DURATION,
    RUCIO_DURATION,
    TRANSFER_DURATION,
    Samples,
    Stopwatch,
    assert_plausible_durations,
)

SECTION = "Prometheus, after its next scrape: "
TIME_TO_DATA = "rucio_jupyterlab_time_to_data_"


def summed(pattern: str, text: str) -> Counter[tuple[str, ...]]:
    """Raw exposition lines matching ``pattern`` (label groups, then the value), summed by those labels."""
    totals: Counter[tuple[str, ...]] = Counter()
    for *labels, value in re.findall(pattern, text):
        totals[tuple(labels)] += int(float(value))
    return totals


def raw_samples(raw: str) -> Samples:
    """The series the demo prints (those not at zero), keyed as ``JupyterServerProcess.samples`` keys them."""
    lines = "\n".join(line.strip() for line in raw.splitlines() if line.startswith("  rucio_jupyterlab_"))
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(lines + "\n") for s in family.samples}


def test_demo_prints_the_raw_series_and_the_same_counts_through_prometheus() -> None:
    with Stopwatch() as wall:
        done = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True, text=True, timeout=180,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    raw, inbound, outbound, transfers, waited = done.stdout.split(SECTION)
    assert "scraping it with deploy/prometheus/jupyter-server.yml" in raw
    # The Rucio server the set-up installs, as its GET /ping says.
    pinned = re.search(r'"rucio==([\d.]+)"', (REPO / "scripts" / "bootstrap-rucio-server").read_text())
    assert pinned is not None
    assert f"Rucio server {pinned.group(1)} (PyPI rucio, SQLite)" in raw
    assert inbound.startswith("sum by (handler, status_code) (rucio_jupyterlab_http_requests_total)")
    assert outbound.startswith("sum by (rucio_instance, operation, outcome) (rucio_jupyterlab_rucio_requests_total)")

    raw_inbound = summed(
        r'rucio_jupyterlab_http_requests_total\{handler="([^"]+)",method="\w+",status_code="(\d+)"\} (\S+)', raw
    )
    promql_inbound = summed(r'\{handler="([^"]+)",status_code="(\d+)"\} (\d+)', inbound)
    assert len(raw_inbound) > 10
    assert promql_inbound == raw_inbound

    raw_outbound = summed(
        r'rucio_jupyterlab_rucio_requests_total\{instance="(\w+)",operation="(\w+)",outcome="(\w+)"\} (\S+)', raw
    )
    promql_outbound = summed(r'\{operation="(\w+)",outcome="(\w+)",rucio_instance="(\w+)"\} (\d+)', outbound)
    assert {("atlas", "get_rses", "4xx"), ("cms", "get_files", "2xx")} <= set(raw_outbound)
    assert {(i, o, r): n for (o, r, i), n in promql_outbound.items()} == dict(raw_outbound)


    # The real download and upload: both succeeded, with their bytes, and Prometheus says the same.
    assert 'rucio_jupyterlab_transfer_bytes_total{direction="download",rucio_instance="cms"} 50000.0' in raw
    assert 'rucio_jupyterlab_transfer_bytes_total{direction="upload",rucio_instance="cms"} 12345.0' in raw
    assert transfers.startswith("sum by (rucio_instance, direction, outcome) (rucio_jupyterlab_transfers_ended_total)")
    ended = summed(r'\{direction="(\w+)",outcome="(\w+)",rucio_instance="(\w+)"\} (\d+)', transfers)
    assert {k: n for k, n in ended.items() if n} == {("download", "succeeded", "cms"): 1,
                                                     ("upload", "succeeded", "cms"): 1}

    # The replica-mode wait: made available, REPLICATING, the transfer's end, then every file OK: one wait
    # ended available, within 30 minutes, none open.
    assert re.search(r"did\?namespace=atlas&did=data18:RAW\.dataset&poll=1 +-> 200 REPLICATING, REPLICATING", raw)
    assert re.search(r"did\?namespace=atlas&did=data18:RAW\.dataset&poll=1 +-> 200 OK, OK", raw)
    transferred = re.search(r"files to SITE_DISK ended ([\d.]+) s after the make-available answered", raw)
    clock = re.search(r"the demo's own clock: ([\d.]+) s from sending the make-available", raw)
    assert transferred is not None and clock is not None
    atlas = {"rucio_instance": "atlas", "mode": "replica"}
    waits = raw_samples(raw)
    available = {**atlas, "outcome": "available"}
    assert waits.get((TIME_TO_DATA + "seconds_count", frozenset(available.items()))) == 1
    assert waits.get((TIME_TO_DATA + "seconds_bucket", frozenset({**available, "le": "1800.0"}.items()))) == 1
    # From the make-available to the poll that first showed every file there, after the transfer ended.
    seconds = waits.get((TIME_TO_DATA + "seconds_sum", frozenset(available.items())), 0.0)
    assert float(transferred.group(1)) < seconds <= float(clock.group(1))
    assert waits.get((TIME_TO_DATA + "waits", frozenset(atlas.items()))) == 0
    made = {(dict(labels)["outcome"], value) for (name, labels), value in waits.items()
            if name == TIME_TO_DATA + "make_available_total"}
    assert made == {("rule_created", 1)}
    # Prometheus sees it too, and the download's wait in download mode (cms).
    assert waited.startswith("sum by (rucio_instance, mode, outcome) (rucio_jupyterlab_time_to_data_seconds_count)")
    ended_waits = summed(r'\{mode="(\w+)",outcome="(\w+)",rucio_instance="(\w+)"\} (\d+)', waited)
    assert {k: n for k, n in ended_waits.items() if n} == {("replica", "available", "atlas"): 1,
                                                           ("download", "available", "cms"): 1}

    # Every request, call to Rucio and transfer the demo counted took some time, less than the demo did.
    grown = assert_plausible_durations({}, raw_samples(raw), wall.seconds,
                                       families=[HTTP_DURATION, RUCIO_DURATION, TRANSFER_DURATION])
    assert grown[HTTP_DURATION][0] == sum(raw_inbound.values())
    assert grown[RUCIO_DURATION][0] == sum(raw_outbound.values())
    assert grown[TRANSFER_DURATION][0] == 2
