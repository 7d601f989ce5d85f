"""Every way docs/configuration.md names of setting an option, tried on a real Jupyter server.

Each way sets ``RucioMetrics.enabled = False`` (the server's log then says
so, and no route is instrumented) and, where the docs put rucio-jupyterlab's
``RucioConfig`` too, a Rucio instance (the ``instances`` route lists it). A
``jupyter_server_config.d/`` file is read for ``ServerApp.jpserver_extensions``
alone: it enables rucio_metrics, and options beside it are ignored. Which
place wins when two set the same key is the docs' order too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .servers.jupyter_server_process import REPO, JupyterServerProcess, unreachable_rucio_instance

DISABLED = "rucio_metrics: disabled by RucioMetrics.enabled = False"
SHIPPED_ENABLER = REPO / "jupyter-config" / "jupyter_server_config.d" / "rucio_metrics.json"
ALL_ROUTES = 16


def instance(name: str) -> dict[str, Any]:
    return unreachable_rucio_instance(name)


def config_dir(server: JupyterServerProcess) -> Path:
    """The server's JUPYTER_CONFIG_DIR, which JupyterServerProcess writes its jupyter_server_config.json into."""
    folder = server.root / "config"
    folder.mkdir(exist_ok=True)
    return folder


def in_json(server: JupyterServerProcess) -> None:
    server.config["RucioMetrics"] = {"enabled": False}
    server.config["RucioConfig"] = {"instances": [instance("from-json")]}


def in_python(server: JupyterServerProcess) -> None:
    del server.config["RucioConfig"]  # the JSON file beside it would win
    server.python_config = (
        "c.RucioMetrics.enabled = False\n"
        f"c.RucioConfig.instances = [{instance('from-python')!r}]\n"
    )


def on_the_command_line(server: JupyterServerProcess) -> None:
    server.args.append("--RucioMetrics.enabled=False")


def in_jupyter_config_path(server: JupyterServerProcess) -> None:
    del server.config["RucioConfig"]
    folder = server.root / "system-config"
    folder.mkdir()
    (folder / "jupyter_server_config.json").write_text(json.dumps({
        "RucioMetrics": {"enabled": False}, "RucioConfig": {"instances": [instance("from-config-path")]},
    }))
    server.env["JUPYTER_CONFIG_PATH"] = str(folder)


# (way, how, the Rucio instance it configures, or None where the docs give no RucioConfig that way)
WAYS: list[tuple[str, Callable[[JupyterServerProcess], None], str | None]] = [
    ("jupyter_server_config.json in JUPYTER_CONFIG_DIR", in_json, "from-json"),
    ("jupyter_server_config.py in JUPYTER_CONFIG_DIR", in_python, "from-python"),
    ("--RucioMetrics.enabled=False", on_the_command_line, None),
    ("jupyter_server_config.json in JUPYTER_CONFIG_PATH", in_jupyter_config_path, "from-config-path"),
]


def instrumented_routes(server: JupyterServerProcess) -> float | None:
    """``rucio_jupyterlab_http_instrumented_routes``, or None when rucio_metrics exports nothing."""
    for (name, _), value in server.samples().items():
        if name == "rucio_jupyterlab_http_instrumented_routes":
            return value
    return None


def instance_names(server: JupyterServerProcess) -> list[str]:
    response = server.request("GET", "rucio-jupyterlab/instances")
    assert response.status_code == 200, response.text
    return [i["name"] for i in response.json()["instances"]]


@pytest.mark.parametrize(("way", "how", "rucio_instance"), WAYS, ids=[w for w, _, _ in WAYS])
def test_each_way_the_docs_name_takes_effect(way: str, how: Callable[[JupyterServerProcess], None],
                                            rucio_instance: str | None) -> None:
    server = JupyterServerProcess()
    how(server)
    with server:
        assert instrumented_routes(server) is None, way
        assert DISABLED in server.log(), way
        assert instance_names(server) == ([rucio_instance] if rucio_instance else []), way


def test_a_config_d_file_enables_the_extension_and_nothing_else_in_it_is_read() -> None:
    # What `jupyter server extension enable --user rucio_metrics` or pip's data file puts there, with the
    # options the docs once said could go beside it.
    server = JupyterServerProcess()
    del server.config["ServerApp"]["jpserver_extensions"]["rucio_metrics"]  # only the .d file enables it
    del server.config["RucioConfig"]
    d = config_dir(server) / "jupyter_server_config.d"
    d.mkdir()
    enabler = json.loads(SHIPPED_ENABLER.read_text())
    (d / "rucio_metrics.json").write_text(json.dumps({
        **enabler, "RucioMetrics": {"enabled": False}, "RucioConfig": {"instances": [instance("from-config-d")]},
    }))
    with server:
        assert instrumented_routes(server) == ALL_ROUTES  # loaded by the .d file, and enabled = False ignored
        assert DISABLED not in server.log()
        assert instance_names(server) == []


def test_which_place_wins_a_key_set_twice() -> None:
    # Each key is set in two places or more; a section's other keys merge from every place.
    server = JupyterServerProcess()
    server.python_config = (
        'c.RucioMetrics.latency_metric = "histogram"\n'          # set here alone: kept
        'c.RucioMetrics.route_prefixes = ["rucio-jupyterlab/did"]\n'
        "c.RucioMetrics.buckets = [1.0]\n"
    )
    server.config["RucioMetrics"] = {"route_prefixes": ["rucio-jupyterlab/upload"], "buckets": [2.0]}
    folder = server.root / "system-config"
    folder.mkdir()
    (folder / "jupyter_server_config.json").write_text(json.dumps({
        "RucioMetrics": {"buckets": [3.0], "enabled": False},
    }))
    server.env["JUPYTER_CONFIG_PATH"] = str(folder)
    server.args.append("--RucioMetrics.enabled=True")
    with server:
        # The command line over JUPYTER_CONFIG_PATH's file: enabled.
        assert instrumented_routes(server)
        # The .json over the .py of one folder: the upload route and the routes under it alone.
        handlers = {dict(labels)["handler"] for name, labels in server.samples("rucio_jupyterlab_http_request_fail")}
        assert handlers == {"/rucio-jupyterlab/upload", "/rucio-jupyterlab/upload/jobs",
                            "/rucio-jupyterlab/upload/jobs/details", "/rucio-jupyterlab/upload/jobs/log"}
        # JUPYTER_CONFIG_PATH's folder over JUPYTER_CONFIG_DIR: its buckets; the .py's histogram kept.
        bounds = {dict(labels)["le"] for name, labels in server.samples("rucio_jupyterlab_http_request_duration")
                  if name.endswith("_bucket")}
        assert bounds == {"3.0", "+Inf"}
