"""What rucio_metrics.fleet trusts: the hub's origin only, and never the shape of an answer.

Each case is a real HTTP server on loopback that answers as a hub, a
gateway in front of it, or a misconfigured proxy might: a redirect to
another origin, a token file in mid-rotation, well-formed JSON of the wrong
shape, pages that never end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from rucio_metrics import fleet

from .servers.jupyter_server_process import REPO
from .support.json_http_server import Answer, AnswerFunction, JSONHTTPServer
from .test_fleet_discovery import server_model, user, wait_until

SECRET = "s3cr3t-hub-token-value"
GOOD_PAGE = {"items": [user("alice", **{"": server_model("/user/alice/")})],
             "_pagination": {"offset": 0, "limit": 200, "total": 1, "next": None}}

def always(status: int, body: Any, **headers: str) -> AnswerFunction:
    return lambda path, request_headers: (status, headers, body)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def run(hub_url: str, token_file: Path, output: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = fleet.main(["--hub-url", hub_url, "--token-file", str(token_file), "--output", str(output)])
    return code, capsys.readouterr().err


# -- 1. the token goes to the hub's origin and nowhere else ---------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_a_redirect_to_another_origin_is_refused_and_the_token_stays_home(
    host: str, token_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Another port on the same machine is another origin as much as another host is.
    with JSONHTTPServer(always(200, GOOD_PAGE)) as elsewhere:
        redirect = always(302, {}, Location=f"{elsewhere.url_on(host)}hub/api/users?state=ready")
        with JSONHTTPServer(redirect) as hub:
            output = tmp_path / "targets.json"
            output.write_text("[]\n")
            code, error = run(hub.url, token_file, output, capsys)
    assert code == 1
    assert elsewhere.seen == []  # not even a request without the token
    assert "redirecting to another origin" in error and f"{host}:{elsewhere.port}" in error
    assert SECRET not in error
    assert output.read_text() == "[]\n"


def test_a_redirect_within_the_hub_is_followed_with_the_token(
    token_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def answer(path: str, headers: dict[str, str]) -> Answer:
        if path.startswith("/old/"):
            return 301, {"Location": path.replace("/old/", "/", 1)}, {}
        return 200, {}, GOOD_PAGE

    with JSONHTTPServer(answer) as hub:
        code, error = run(hub.url + "old/", token_file, tmp_path / "targets.json", capsys)
    assert code == 0, error
    assert [auth for _, auth in hub.seen] == [f"token {SECRET}"] * 2


# -- 2. the token never appears in a message -------------------------------------------------------


@pytest.mark.parametrize(("content", "rule"), [
    (f"{SECRET}\n{SECRET}-next\n", "more than one line"),
    (f"{SECRET}\r\n{SECRET}\r\n", "more than one line"),
    (f"{SECRET} {SECRET}", "space"),
    (f"{SECRET}\x00", "control character"),
    (f"{SECRET}é", "printable ASCII"),
    ("\n\n", "is empty"),
])
def test_a_bad_token_file_names_the_rule_it_breaks_never_the_token(
    content: str, rule: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "token"
    bad.write_text(content)
    with JSONHTTPServer(always(200, GOOD_PAGE)) as hub:
        code, error = run(hub.url, bad, tmp_path / "targets.json", capsys)
    assert code == 1
    assert f"--token-file: the file {rule}" in error or ("--token-file: the file" in error and rule in error)
    assert str(bad) not in error  # nor the path, where a token may have been pasted
    assert SECRET not in error
    assert hub.seen == []  # refused before any request


def test_a_token_given_where_the_path_belongs_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pasted = "0f" * 32
    with JSONHTTPServer(always(200, GOOD_PAGE)) as hub:
        code, error = run(hub.url, Path(pasted), tmp_path / "targets.json", capsys)
    assert code == 1
    assert "--token-file: the file cannot be read (No such file or directory)" in error
    assert pasted not in error
    assert hub.seen == []


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o640, True), (0o644, True)])
def test_a_token_file_others_may_read_is_warned_about(
    mode: int, warned: bool, token_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file.chmod(mode)
    with JSONHTTPServer(always(200, GOOD_PAGE)) as hub:
        code, error = run(hub.url, token_file, tmp_path / "targets.json", capsys)
    assert code == 0
    assert ("--token-file: the file may be read by its group or by anyone" in error) is warned
    assert str(token_file) not in error and SECRET not in error


def test_a_bad_token_in_the_environment_is_refused_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", f"{SECRET}\n{SECRET}")
    with pytest.raises(fleet.FleetError, match=r"^\$JUPYTERHUB_API_TOKEN has more than one line") as raised:
        fleet.read_token(None)
    assert SECRET not in str(raised.value)


def test_an_answer_that_echoes_the_token_is_reported_without_it(
    token_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with JSONHTTPServer(lambda path, headers: (200, {}, f"<html>{headers.get('Authorization')}</html>")) as hub:
        code, error = run(hub.url, token_file, tmp_path / "targets.json", capsys)
    assert code == 1 and "answered JSON of an unexpected shape" in error and SECRET not in error


# -- 4. a well-formed but unexpected answer is the hub's fault -------------------------------------

UNEXPECTED_ANSWERS = {
    "empty object": {},
    "items not a list": {"items": {"alice": {}}},
    "pagination null": {"items": [], "_pagination": None},
    "next without offset": {"items": [], "_pagination": {"next": {"limit": 200}}},
    "server model null": {"items": [{"kind": "user", "name": "alice", "servers": {"": None}}], "_pagination": {}},
    "servers a list": {"items": [{"kind": "user", "name": "alice", "servers": [{"name": ""}]}]},
    "user without a name": {"items": [{"kind": "user", "servers": {}}]},
    "user a string": ["alice"],
}


@pytest.mark.parametrize("body", UNEXPECTED_ANSWERS.values(), ids=UNEXPECTED_ANSWERS.keys())
def test_an_answer_of_the_wrong_shape_is_a_clear_error(body: Any, tmp_path: Path) -> None:
    with JSONHTTPServer(always(200, body)) as hub, pytest.raises(fleet.FleetError, match="unexpected shape"):
        fleet.update(hub.url, SECRET, tmp_path / "targets.json")


def test_interval_mode_keeps_the_last_good_file_through_wrong_shapes(token_file: Path, tmp_path: Path) -> None:
    answers: list[Any] = [GOOD_PAGE]
    with JSONHTTPServer(lambda path, headers: (200, {}, answers[-1])) as hub:
        output = tmp_path / "targets.json"
        command = [sys.executable, "-m", "rucio_metrics.fleet", "--hub-url", hub.url, "--token-file",
                   str(token_file), "--output", str(output), "--interval", "0.1"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as helper:
            try:
                wait_until(lambda: output.exists())
                good = output.read_text()
                for body in UNEXPECTED_ANSWERS.values():
                    answers.append(body)
                    seen = len(hub.seen)
                    wait_until(lambda seen=seen: len(hub.seen) > seen + 1)
                    assert helper.poll() is None
                    assert output.read_text() == good
                answers.append({"items": [], "_pagination": {"next": None}})  # the hub is back, with no servers
                wait_until(lambda: output.read_text() == "[]\n")
                assert helper.poll() is None
            finally:
                helper.terminate()
                _, errors = helper.communicate(timeout=10)
    assert errors.count("unexpected shape") >= len(UNEXPECTED_ANSWERS)
    assert "Traceback" not in errors and SECRET not in errors


# -- 5. pagination ends -------------------------------------------------------------------------------


def test_pages_whose_offset_does_not_advance_stop_at_once(tmp_path: Path) -> None:
    loop = {"items": [], "_pagination": {"offset": 0, "next": {"offset": 0, "limit": 200}}}

    def answer(path: str, headers: dict[str, str]) -> Answer:
        # Bounded even for a helper that follows the loop: the 50th request fails.
        return (200, {}, loop) if len(hub.seen) < 50 else (500, {}, {"message": "enough"})

    with JSONHTTPServer(answer) as hub:
        with pytest.raises(fleet.FleetError, match="offset 0 does not advance past 0"):
            fleet.update(hub.url, SECRET, tmp_path / "targets.json")
    assert len(hub.seen) == 1


def test_pages_that_never_end_stop_at_the_page_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "MAX_PAGES", 5)

    def endless(path: str, headers: dict[str, str]) -> Answer:
        offset = int(parse_qs(urlsplit(path).query)["offset"][0])
        return 200, {}, {"items": [], "_pagination": {"next": {"offset": offset + 200}}}

    with JSONHTTPServer(endless) as hub:
        with pytest.raises(fleet.FleetError, match="more pages after 5 pages"):
            fleet.update(hub.url, SECRET, tmp_path / "targets.json")
    assert len(hub.seen) == 5


def test_the_page_cap_covers_a_very_large_hub() -> None:
    assert fleet.MAX_PAGES * fleet.PAGE_LIMIT >= 100_000


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # urllib would send loopback requests to a proxy named in the environment.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield
