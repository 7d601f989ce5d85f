"""The README's main job, scripts/demo.py: raw series and, beside them, the same counts through Prometheus."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

from .jupyter_server_process import REPO


def test_demo_prints_the_raw_series_and_the_same_counts_through_prometheus() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    raw, _, promql = done.stdout.partition("Prometheus, after its next scrape:")
    assert "scraping it with deploy/prometheus/jupyter-server.yml" in raw
    assert "rucio_jupyterlab_http_instrumented_routes 16.0" in raw

    summed: Counter[tuple[str, str]] = Counter()
    pattern = r'rucio_jupyterlab_http_requests_total\{handler="([^"]+)",method="\w+",status_code="(\d+)"\} (\S+)'
    for handler, status, value in re.findall(pattern, raw):
        summed[(handler, status)] += int(float(value))
    scraped = {
        (handler, status): int(value)
        for handler, status, value in re.findall(r'\{handler="([^"]+)",status_code="(\d+)"\} (\d+)', promql)
    }
    assert len(summed) == 7
    assert scraped == dict(summed)
