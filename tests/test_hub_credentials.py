"""What a hub user can do with what Prometheus sends to their server, on a real JupyterHub.

A single-user server runs its user's code: alice's own ``~/.jupyter`` config
(user-writable, as under Zero to JupyterHub) records the ``Authorization``
header of every request to her server's metrics. Prometheus scrapes the
fleet with the shipped ``jupyterhub-fleet.yml``, the fleet helper's targets
and the scrape token. What alice keeps must open nothing but metrics: not
the hub's API, not the hub's own ``/hub/metrics``, nothing of bob's server
but his metrics. The fleet helper's token, which lists every user, never
reaches a server. A revoked scrape token stops working within
``RucioMetrics.hub_token_cache_seconds``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .servers.jupyterhub_process import (
    ADMIN_TOKEN,
    FLEET_TOKEN,
    HUB_METRICS_TOKEN,
    METRICS_SCOPE,
    SCRAPE_TOKEN,
    JupyterHubProcess,
    write_token_files,
)
from .servers.prometheus_process import PrometheusProcess
from .support.deploy_files import deploy_config
from .test_fleet import NOT_FOR_METRICS, run_fleet_helper, server_url

CACHE_SECONDS = 3.0

# alice's ~/.jupyter/jupyter_server_config.py: what any user may write there.
CAPTURE_CONFIG = """\
import json

def keep_what_prometheus_sends(handler):
    if handler.request.path.endswith("/metrics"):
        with open({captured!r}, "a") as f:
            f.write(json.dumps(handler.request.headers.get("Authorization", "")) + "\\n")

c.ServerApp.tornado_settings = {{"log_function": keep_what_prometheus_sends}}
"""


@dataclass
class CapturedFleet:
    hub: JupyterHubProcess
    captured: list[str]  # the tokens alice's server saw, as sent (scheme stripped)
    log_after_scrapes: str  # the hub's and the servers' log once Prometheus scraped, before any test's requests


@pytest.fixture(scope="module")
def captured_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CapturedFleet]:
    root = tmp_path_factory.mktemp("captured")
    fleet_token_file, scrape_token_file = write_token_files(root)
    targets = root / "jupyterhub.json"
    # A built-in scope in the options is refused: the default (the custom scope) stays.
    options = {"hub_token_cache_seconds": CACHE_SECONDS, "hub_metrics_scope": "read:metrics"}
    with JupyterHubProcess(server_options=options, metrics_readers=["reader"]) as hub:
        captured_file = hub.home("alice") / "captured"
        user_config = hub.home("alice") / ".jupyter" / "jupyter_server_config.py"
        user_config.parent.mkdir(parents=True)
        user_config.write_text(CAPTURE_CONFIG.format(captured=str(captured_file)))
        # carol turned rucio_metrics off in her own config: her server's metrics are jupyter_server's alone.
        carol_config = hub.home("carol") / ".jupyter" / "jupyter_server_config.json"
        carol_config.parent.mkdir(parents=True)
        carol_config.write_text(json.dumps({"RucioMetrics": {"enabled": False}}))
        hub.start_servers(["alice", "bob"])
        helper = run_fleet_helper(hub, fleet_token_file, targets)
        assert helper.returncode == 0, helper.stderr
        with PrometheusProcess(deploy_config("jupyterhub-fleet.yml", scrape_token_file, file_sd=targets)) as prom:
            prom.wait_for_targets(2)
            prom.wait_for_scrapes_after(time.time())
        sent = [json.loads(line) for line in captured_file.read_text().splitlines()]
        log_after_scrapes = hub.log()
        hub.start_servers(["carol"])  # after the scrapes: Prometheus would be refused at hers
        yield CapturedFleet(hub, [header.split(None, 1)[-1] for header in sent if header], log_after_scrapes)


def test_alice_kept_the_scrape_token_and_nothing_else(captured_fleet: CapturedFleet) -> None:
    assert captured_fleet.captured, "Prometheus' scrapes of alice's server were not seen by her config"
    assert set(captured_fleet.captured) == {SCRAPE_TOKEN}
    assert FLEET_TOKEN not in captured_fleet.captured


def test_what_alice_kept_opens_nothing_but_metrics(captured_fleet: CapturedFleet) -> None:
    hub = captured_fleet.hub
    [kept] = set(captured_fleet.captured)
    auth = {"Authorization": f"token {kept}"}
    # Every server's metrics: what the threat model in docs/security.md says it opens.
    for user in ("alice", "bob"):
        assert requests.get(server_url(hub, user, "metrics"), headers=auth, timeout=30).status_code == 200
    # Nothing else of bob's server (nor of her own).
    for user in ("alice", "bob"):
        for method, path, body in NOT_FOR_METRICS:
            got = requests.request(method, server_url(hub, user, path), headers=auth, json=body, timeout=30,
                                   allow_redirects=False)
            assert got.status_code == 403, f"{method} {user}'s {path} with what alice kept: {got.status_code}"
    # Nothing of the hub: no user list, no user, no tokens, no servers, not the hub's own metrics.
    for method, path in [("GET", "hub/api/users"), ("GET", "hub/api/users/bob"), ("GET", "hub/api/users/bob/tokens"),
                         ("POST", "hub/api/users/bob/tokens"), ("POST", "hub/api/users/bob/server"),
                         ("DELETE", "hub/api/users/bob/server"), ("GET", "hub/api/services"),
                         ("GET", "hub/api/proxy"), ("GET", "hub/metrics")]:
        got = requests.request(method, hub.url + path, headers=auth, json={}, timeout=30, allow_redirects=False)
        assert got.status_code in (403, 404), f"{method} /{path} with what alice kept: {got.status_code}"
    # Who it is, which any token may ask: a service whose one scope is the metrics scope.
    whoami = requests.get(hub.url + "hub/api/user", headers=auth, timeout=30).json()
    assert (whoami["kind"], whoami["scopes"]) == ("service", [METRICS_SCOPE])


def test_scrapes_with_the_scrape_token_leave_no_warning_in_the_servers_log(captured_fleet: CapturedFleet) -> None:
    # The scrape token lacks access to the server; JupyterHub's identity provider would say so on every scrape.
    log = captured_fleet.log_after_scrapes
    assert "rucio_metrics: /user/alice/metrics also admits hub tokens" in log
    assert not [line for line in log.splitlines() if line.rstrip().endswith("Not allowing user prometheus")]


def test_a_revoked_metrics_token_is_refused_within_the_cache_setting(captured_fleet: CapturedFleet) -> None:
    hub = captured_fleet.hub
    token_id, token = hub.create_token("reader", [METRICS_SCOPE])
    url = server_url(hub, "alice", "metrics")
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.get(url, headers=auth, timeout=30).status_code == 200
    hub.revoke_token("reader", token_id)
    revoked = time.monotonic()
    while requests.get(url, headers=auth, timeout=30).status_code == 200:
        # A bound with room for a loaded machine; what matters is that it ends, near the setting.
        assert time.monotonic() - revoked < CACHE_SECONDS + 10, "a revoked token still reads metrics"
        time.sleep(0.2)
    print(f"\nrevoked token refused after {time.monotonic() - revoked:.1f} s (setting: {CACHE_SECONDS:g} s)")
    assert requests.get(url, headers=auth, timeout=30).status_code == 403


def test_a_built_in_scope_in_the_options_is_refused_and_the_custom_scope_kept(captured_fleet: CapturedFleet) -> None:
    hub = captured_fleet.hub
    url = server_url(hub, "bob", "metrics")
    assert requests.get(url, headers={"Authorization": f"Bearer {HUB_METRICS_TOKEN}"}, timeout=30).status_code == 403
    assert requests.get(url, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}, timeout=30).status_code == 200
    assert ("rucio_metrics: invalid option RucioMetrics.hub_metrics_scope = 'read:metrics': "
            "not a JupyterHub custom scope") in captured_fleet.log_after_scrapes


def test_a_server_with_rucio_metrics_off_refuses_the_scrape_token(captured_fleet: CapturedFleet) -> None:
    hub = captured_fleet.hub
    url = server_url(hub, "carol", "metrics")
    assert requests.get(url, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}, timeout=30).status_code == 403
    assert requests.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30).status_code == 200


def test_no_log_line_shows_a_token(captured_fleet: CapturedFleet) -> None:
    log = captured_fleet.hub.log()
    for token in (SCRAPE_TOKEN, FLEET_TOKEN):
        assert token not in log


def test_the_scrape_token_file_in_the_fleet_config_is_a_path_of_its_own() -> None:
    # Two tokens, two files: the fleet helper's file is never the one Prometheus sends.
    text = (Path(__file__).parent.parent / "deploy" / "prometheus" / "jupyterhub-fleet.yml").read_text()
    assert "jupyterhub-scrape-token" in text and "jupyterhub-fleet-token" in text
