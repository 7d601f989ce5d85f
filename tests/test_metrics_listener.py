"""The metrics listener on a real Jupyter server: its own port, its own token, metrics and nothing else."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .servers.child_process import free_port
from .servers.jupyter_server_process import METRICS_TOKEN, JupyterServerProcess


def listener_config(port: int, token_file: Path | str | None) -> dict[str, dict[str, object]]:
    options: dict[str, object] = {"metrics_port": port}
    if token_file is not None:
        options["metrics_token_file"] = str(token_file)
    return {"RucioMetrics": options}


class ListenedServer:
    def __init__(self, server: JupyterServerProcess, port: int, token_file: Path) -> None:
        self.server, self.port, self.token_file = server, port, token_file

    def get(self, path: str = "/metrics", token: str | None = METRICS_TOKEN, scheme: str = "Bearer",
            ) -> requests.Response:
        headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
        return requests.get(f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=10)


@pytest.fixture(scope="module")
def listened() -> Iterator[ListenedServer]:
    # A user's server as it is, terminals and all: the metrics token must open none of it.
    with JupyterServerProcess(base_url="/user/alice/", metrics_listener=True, other_extensions=True) as server:
        assert server.request("GET", "rucio-jupyterlab/instances").status_code == 200
        yield ListenedServer(server, server.metrics_port, server.metrics_token_file)


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_the_listener_serves_what_base_url_metrics_serves(listened: ListenedServer) -> None:
    native = listened.server.request("GET", "metrics")
    ours = listened.get()
    assert ours.status_code == 200
    assert ours.headers["Content-Type"] == native.headers["Content-Type"]
    # The process's whole default registry: jupyter_server's families and ours alike.
    assert families(ours.text) == families(native.text)
    assert {"http_request_duration_seconds", "rucio_jupyterlab_http_requests",
            "rucio_jupyterlab_http_instrumented_routes"} <= set(families(ours.text))
    assert 'rucio_jupyterlab_http_requests_total{handler="/rucio-jupyterlab/instances",method="GET",' \
           'status_code="200"} 1.0' in ours.text
    assert listened.get(scheme="token").status_code == 200


def test_the_listener_refuses_a_request_without_its_token(listened: ListenedServer) -> None:
    missing = listened.get(token=None)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert listened.get(token="not-the-token").status_code == 403
    assert listened.get(token="rucio-metrics-test-token").status_code == 403  # the server's token is not it
    # A token in the URL would end up in logs: not accepted.
    assert listened.get(f"/metrics?token={METRICS_TOKEN}", token=None).status_code == 401


def test_the_listener_serves_metrics_and_nothing_else(listened: ListenedServer) -> None:
    for path in ("/", "/api/kernels", "/api/status", "/user/alice/api/kernels", "/metrics/", "/user/alice/metrics"):
        assert listened.get(path).status_code == 404, path


def test_the_metrics_token_opens_nothing_on_the_server(listened: ListenedServer) -> None:
    server = listened.server
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    for method, path in [("GET", "metrics"), ("GET", "api/sessions"), ("POST", "api/kernels"),
                         ("POST", "api/contents"), ("POST", "api/terminals"),
                         ("GET", "rucio-jupyterlab/auth?namespace=atlas&type=userpass"),
                         ("GET", "rucio-jupyterlab/instances")]:
        got = requests.request(method, server.url(path), headers=auth, json={}, timeout=10, allow_redirects=False)
        assert got.status_code == 403, (method, path, got.status_code)
    # Every one of those routes is there: the server's own token reads each (so the 403s are the metrics token's).
    for path in ("api/sessions", "api/kernels", "api/contents", "api/terminals", "rucio-jupyterlab/instances"):
        assert server.request("GET", path).status_code == 200, path


def test_a_rotated_token_file_takes_effect_without_a_restart(listened: ListenedServer) -> None:
    try:
        listened.token_file.write_text("the-rotated-metrics-token\n")
        assert listened.get().status_code == 403
        assert listened.get(token="the-rotated-metrics-token").status_code == 200
        listened.token_file.write_text("")  # caught mid-rotation: refuse, never serve unauthenticated
        assert listened.get().status_code == 503
        assert listened.get(token=None).status_code == 503
        # Named once, not once per scrape (a fleet scrapes every server every few seconds) ...
        assert listened.server.log().count("RucioMetrics.metrics_token_file: the file is empty") == 1
        listened.token_file.write_text("short\n")
        assert listened.get().status_code == 503
        # ... and again when the problem changes.
        assert listened.server.log().count("RucioMetrics.metrics_token_file: the file holds a token shorter") == 1
        listened.token_file.write_text(METRICS_TOKEN + "\n")
        assert listened.get().status_code == 200
        listened.token_file.write_text("")  # a problem again after a good read: named again
        assert listened.get().status_code == 503
        assert listened.server.log().count("RucioMetrics.metrics_token_file: the file is empty") == 2
    finally:
        listened.token_file.write_text(METRICS_TOKEN + "\n")
    assert listened.get().status_code == 200


def assert_serves_without_listener(server: JupyterServerProcess, port: int) -> None:
    assert server.request("GET", "api/status").status_code == 200
    assert server.request("GET", "rucio-jupyterlab/instances").status_code == 200
    assert "rucio_jupyterlab_http_requests_total" in server.metrics_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)


@pytest.mark.parametrize(("content", "rule"), [
    (None, "cannot be read"), ("", "is empty"), ("two-Xq7v\nlines\n", "has more than one line"),
    ("short-Xq7v12345", "holds a token shorter than 16 characters"),
], ids=["missing", "empty", "two-lines", "15-characters"])
def test_a_bad_token_file_keeps_the_listener_off_and_the_server_serving(
    tmp_path: Path, content: str | None, rule: str,
) -> None:
    token_file = tmp_path / "metrics-token"
    if content is not None:
        token_file.write_text(content)
        token_file.chmod(0o600)
    port = free_port()
    with JupyterServerProcess(extra_config=listener_config(port, token_file)) as server:
        assert_serves_without_listener(server, port)
        log = server.log()
    assert f"RucioMetrics.metrics_token_file: the file {rule}" in log
    assert "the metrics listener stays off" in log
    assert "Xq7v" not in log  # the file's content is never shown
    assert str(token_file) not in log  # nor its path (a token may be pasted there)


def test_a_token_pasted_where_the_path_belongs_is_never_logged() -> None:
    pasted = "0f" * 32
    port = free_port()
    with JupyterServerProcess(extra_config=listener_config(port, pasted)) as server:
        assert_serves_without_listener(server, port)
        log = server.log()
    assert "RucioMetrics.metrics_token_file: the file cannot be read" in log
    assert pasted not in log


def test_a_token_file_others_may_read_is_warned_about(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text(METRICS_TOKEN)
    token_file.chmod(0o644)
    port = free_port()
    with JupyterServerProcess(extra_config=listener_config(port, token_file)) as server:
        auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        assert requests.get(f"http://127.0.0.1:{port}/metrics", headers=auth, timeout=10).status_code == 200
        log = server.log()
    assert "RucioMetrics.metrics_token_file: the file may be read by its group or by anyone" in log
    assert "chmod 600" in log


def test_a_port_taken_keeps_the_listener_off_and_the_server_serving(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text(METRICS_TOKEN)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with JupyterServerProcess(extra_config=listener_config(port, token_file)) as server:
            assert server.request("GET", "api/status").status_code == 200
            assert "rucio_jupyterlab_http_requests_total" in server.metrics_text()
            log = server.log()
    assert f"RucioMetrics.metrics_port = {port}, RucioMetrics.metrics_ip = '127.0.0.1': cannot listen there" in log
    assert METRICS_TOKEN not in log


def test_without_a_token_file_the_listener_is_open_and_says_so() -> None:
    port = free_port()
    with JupyterServerProcess(extra_config=listener_config(port, None)) as server:
        open_scrape = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        log = server.log()
    assert open_scrape.status_code == 200
    assert "rucio_jupyterlab_http_instrumented_routes 16.0" in open_scrape.text
    assert "asks for no token" in log and "network policy" in log


def test_off_by_default() -> None:
    with JupyterServerProcess() as server:
        log = server.log()
    assert "metrics listener" not in log


def test_a_safe_token_file_gives_no_warning(listened: ListenedServer) -> None:
    assert "may be read by its group" not in listened.server.log()
