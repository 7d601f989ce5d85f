"""Route labels and prefix matching."""

from __future__ import annotations

import pytest

from rucio_metrics.routes import prefix_paths, route_label


@pytest.mark.parametrize(("pattern", "base_url", "label"), [
    ("/rucio-jupyterlab/instances", "/", "/rucio-jupyterlab/instances"),
    ("/user/alice/rucio-jupyterlab/instances", "/user/alice/", "/rucio-jupyterlab/instances"),
    ("/user/alice/rucio-jupyterlab/did/make-available", "/user/alice", "/rucio-jupyterlab/did/make-available"),
    ("/hub/rucio-jupyterlab/x", "/user/bob/", "/hub/rucio-jupyterlab/x"),
])
def test_route_label(pattern, base_url, label):
    assert route_label(pattern, base_url) == label


def test_prefix_paths():
    assert prefix_paths("/", ["rucio-jupyterlab"]) == ("/rucio-jupyterlab/",)
    assert prefix_paths("/user/a/", ["/rucio-jupyterlab/", "x"]) == ("/user/a/rucio-jupyterlab/", "/user/a/x/")
    assert prefix_paths("", ["p"]) == ("/p/",)
