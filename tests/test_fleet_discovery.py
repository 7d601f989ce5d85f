"""rucio_metrics.fleet against a small fake Hub REST API on loopback.

The real JupyterHub is in test_fleet.py; here the API's corners that a
small hub does not show: several pages, pending and named servers, a hub
base_url, user subdomains, an old hub without pagination, a bad token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from rucio_metrics import fleet

from .servers.jupyter_server_process import REPO, free_port
from .support.json_http_server import Answer, JSONHTTPServer

TOKEN = "fake-hub-token"


def server_model(url: str, ready: bool = True, name: str = "") -> dict[str, Any]:
    return {"name": name, "ready": ready, "pending": None if ready else "spawn", "url": url}


def user(name: str, **servers: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "user", "name": name, "servers": servers}


class FakeHub(JSONHTTPServer):
    """Serves ``GET <prefix>hub/api/users`` like JupyterHub 5/6, pages of ``page_size`` users."""

    def __init__(self, users: list[dict[str, Any]], prefix: str = "/", page_size: int = 2, paginate: bool = True):
        super().__init__(self.users_api)
        self.users = users
        self.prefix = prefix
        self.page_size = page_size
        self.paginate = paginate

    @property
    def requests(self) -> list[str]:
        return [path for path, _ in self.seen]

    def users_api(self, path: str, headers: dict[str, str]) -> Answer:
        url = urlsplit(path)
        if url.path != f"{self.prefix}hub/api/users":
            return 404, {}, {"status": 404, "message": "Not Found"}
        if headers.get("Authorization") != f"token {TOKEN}":
            return 403, {}, {"status": 403, "message": "Action is not authorized"}
        query = parse_qs(url.query)
        assert query["state"] == ["ready"]
        ready = [u for u in self.users if any(s["ready"] for s in u["servers"].values())]
        if not (self.paginate and "jupyterhub-pagination" in headers.get("Accept", "")):
            return 200, {}, ready
        offset = int(query.get("offset", ["0"])[0])
        limit = min(int(query.get("limit", ["50"])[0]), self.page_size)
        following = offset + limit
        page = {
            "items": ready[offset:following],
            "_pagination": {
                "offset": offset, "limit": limit, "total": len(ready),
                "next": {"offset": following, "limit": limit, "url": "http://hub-internal/"}
                if following < len(ready) else None,
            },
        }
        return 200, {}, page

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def fleet_users() -> list[dict[str, Any]]:
    return [
        user("alice", **{"": server_model("/user/alice/"), "gpu": server_model("/user/alice/gpu/", name="gpu")}),
        user("bob", **{"": server_model("/user/bob/")}),
        user("carol", **{"": server_model("/user/carol/", ready=False)}),  # still starting
        user("dave", **{"": server_model("/user/dave/")}),
        user("erin@example.org", **{"": server_model("/user/erin@example.org/")}),
    ]


@pytest.fixture
def hub(fleet_users: list[dict[str, Any]]) -> Iterator[FakeHub]:
    with FakeHub(fleet_users) as hub:
        yield hub


def read_targets(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text()))


def test_every_ready_server_over_all_pages_becomes_one_target(hub: FakeHub, token_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "targets.json"
    assert fleet.main(["--hub-url", hub.url, "--token-file", str(token_file), "--output", str(output)]) == 0

    def group(instance: str, path: str, **extra: str) -> dict[str, Any]:
        labels = {"__scheme__": "http", "__metrics_path__": path, "instance": instance, **extra}
        return {"targets": [hub.address], "labels": labels}

    assert read_targets(output) == [
        group("alice", "/user/alice/metrics", user="alice"),
        group("alice/gpu", "/user/alice/gpu/metrics", user="alice", server_name="gpu"),
        group("bob", "/user/bob/metrics", user="bob"),
        group("dave", "/user/dave/metrics", user="dave"),
        group("erin@example.org", "/user/erin@example.org/metrics", user="erin@example.org"),
    ]
    # Four ready users in pages of two: two pages, no third request.
    assert [urlsplit(p).query for p in hub.requests] == [
        "state=ready&offset=0&limit=200", "state=ready&offset=2&limit=200",
    ]


def test_hub_with_a_base_url(fleet_users: list[dict[str, Any]], token_file: Path, tmp_path: Path) -> None:
    users = [user("alice", **{"": server_model("/jhub/user/alice/")})]
    with FakeHub(users, prefix="/jhub/") as hub:
        servers = fleet.list_ready_servers(hub.url.rstrip("/"), TOKEN)  # with or without the slash
    assert servers == [fleet.Server(user="alice", name="", url="/jhub/user/alice/")]
    assert fleet.target_groups(servers, hub.url)[0]["labels"]["__metrics_path__"] == "/jhub/user/alice/metrics"


def test_old_hub_without_pagination(fleet_users: list[dict[str, Any]]) -> None:
    with FakeHub(fleet_users, paginate=False) as hub:
        servers = fleet.list_ready_servers(hub.url, TOKEN)
    assert [s.instance for s in servers] == ["alice", "alice/gpu", "bob", "dave", "erin@example.org"]
    assert len(hub.requests) == 1


def test_address_override_and_https() -> None:
    servers = [fleet.Server(user="bob", name="", url="/user/bob/")]
    [group] = fleet.target_groups(servers, "https://hub.example.org/", address="proxy-public.jhub.svc:443")
    assert group == {
        "targets": ["proxy-public.jhub.svc:443"],
        "labels": {"__scheme__": "https", "__metrics_path__": "/user/bob/metrics", "instance": "bob", "user": "bob"},
    }


def test_user_subdomains_give_full_urls() -> None:
    servers = [fleet.Server(user="bob", name="", url="https://bob.hub.example.org/user/bob/")]
    [group] = fleet.target_groups(servers, "https://hub.example.org/")
    assert group["targets"] == ["bob.hub.example.org"]
    assert group["labels"]["__metrics_path__"] == "/user/bob/metrics"


def test_bad_token_fails_and_keeps_the_last_targets(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "targets.json"
    output.write_text("[]\n")
    bad = tmp_path / "bad-token"
    bad.write_text("wrong")
    assert fleet.main(["--hub-url", hub.url, "--token-file", str(bad), "--output", str(output)]) == 1
    error = capsys.readouterr().err
    assert "answered 403" in error and "list:users and read:servers" in error
    assert output.read_text() == "[]\n"


def test_wrong_hub_url_says_so(hub: FakeHub, token_file: Path, tmp_path: Path) -> None:
    with pytest.raises(fleet.FleetError, match=r"answered 404 .*base_url"):
        fleet.update(hub.url + "nope/", TOKEN, tmp_path / "targets.json")


def test_unreachable_hub(tmp_path: Path) -> None:
    with pytest.raises(fleet.FleetError, match="failed"):
        fleet.update(f"http://127.0.0.1:{free_port()}/", TOKEN, tmp_path / "targets.json", timeout=5)


def test_file_is_only_rewritten_when_the_targets_change(hub: FakeHub, tmp_path: Path) -> None:
    output = tmp_path / "targets.json"
    assert fleet.update(hub.url, TOKEN, output) == f"5 ready servers -> {output}"
    inode = output.stat().st_ino
    assert fleet.update(hub.url, TOKEN, output) == f"5 ready servers -> {output} (unchanged)"
    assert output.stat().st_ino == inode
    hub.users.pop(0)
    assert fleet.update(hub.url, TOKEN, output) == f"3 ready servers -> {output}"
    assert output.stat().st_ino != inode  # replaced by a rename, never written in place
    assert [p.name for p in tmp_path.iterdir()] == ["targets.json"]  # no temporary file left


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "from-env")
    assert fleet.read_token(None) == "from-env"
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN")
    with pytest.raises(fleet.FleetError, match="no token"):
        fleet.read_token(None)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(fleet.FleetError, match="is empty"):
        fleet.read_token(str(empty))


def test_interval_mode_follows_the_hub_and_survives_its_errors(hub: FakeHub, token_file: Path, tmp_path: Path) -> None:
    # python -m rucio_metrics.fleet --interval, as a sidecar runs it: it rewrites
    # the file when the servers change and keeps it while the hub refuses.
    output = tmp_path / "targets.json"
    command = [sys.executable, "-m", "rucio_metrics.fleet", "--hub-url", hub.url, "--token-file", str(token_file),
               "--output", str(output), "--interval", "0.1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as helper:
        try:
            wait_until(lambda: output.exists() and len(read_targets(output)) == 5)
            token_file.write_text("revoked")  # re-read each time: the hub now answers 403
            requests_before = len(hub.requests)
            wait_until(lambda: len(hub.requests) > requests_before + 2)
            assert len(read_targets(output)) == 5
            token_file.write_text(TOKEN)
            hub.users[:] = hub.users[:1]
            wait_until(lambda: [g["labels"]["instance"] for g in read_targets(output)] == ["alice", "alice/gpu"])
            assert helper.poll() is None
        finally:
            helper.terminate()
            _, errors = helper.communicate(timeout=10)
    assert "answered 403" in errors
    assert "rucio_metrics.fleet: 5 ready servers" in errors and "rucio_metrics.fleet: 2 ready servers" in errors


def wait_until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
