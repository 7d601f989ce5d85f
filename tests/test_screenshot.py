"""scripts/screenshot.py, in a short run: the README's picture can be taken again, and shows every route."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .servers.jupyter_server_process import REPO
from .test_docs import png_size

ROUTES = ["instances", "file-browser", "list-scopes", "files", "did", "did-search", "list-rses"]


def test_a_short_run_writes_a_png_whose_two_graphs_list_every_route(tmp_path: Path) -> None:
    picture = tmp_path / "graph.png"
    # The script's temporary folders (servers', Chromium's) go here, to see them gone. A short path:
    # Chromium puts a Unix socket in it, and those paths are limited to about 100 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="rm-shot-"))
    try:
        done = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "screenshot.py"), "--seconds", "12", "--output", str(picture)],
            capture_output=True, text=True, timeout=240, check=False, env={**os.environ, "TMPDIR": str(tmp)},
        )
        left = list(tmp.iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    width, height = png_size(picture.read_bytes())
    assert width == 1024 and height > 1000, (width, height)
    # The script prints each graph's expression, then its legend (read from the rendered page).
    rates, latencies = done.stdout.split("\nsum by (handler) (rate(rucio_jupyterlab_http_request")[1:]
    for legend in (rates, latencies):
        shown = {line.strip() for line in legend.splitlines()}
        assert {f'{{handler="/rucio-jupyterlab/{route}"}}' for route in ROUTES} <= shown, legend
    assert f"wrote {picture}" in done.stdout
    assert left == []
