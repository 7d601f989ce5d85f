"""Route labels and prefix matching."""

from __future__ import annotations

import pytest
from tornado.web import Application, RequestHandler

from rucio_metrics.routes import prefix_paths, route_label, rules_under


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


class _Handler(RequestHandler):
    def get(self) -> None:
        self.write("ok")


@pytest.mark.parametrize("base_url", ["/", "/user/alice/"])
def test_a_prefix_covers_the_route_that_is_the_prefix_itself_and_those_below_it(base_url):
    # An extension that answers at <base_url>my-extension as well as below it: both are its routes. A
    # route that merely begins with the same letters belongs to another extension.
    paths = ["my-extension", "my-extension/items", "my-extension/items/([^/]+)", "my-extension-admin",
             "my-extensionx", "other/my-extension"]
    app = Application([(base_url + path, _Handler) for path in paths])
    labels = sorted(label for _, label in rules_under(app, base_url, ["my-extension"]))
    assert labels == ["/my-extension", "/my-extension/items", "/my-extension/items/([^/]+)"]
