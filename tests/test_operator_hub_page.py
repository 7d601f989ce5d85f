"""docs/jupyterhub.md followed as written, against a real hub, Prometheus and Alertmanager.

The page's code blocks are read from the markdown and run in its order: the
shell commands (each with the page's settings block in front, as in one
shell), the hub's config lines, the alerting block to uncomment; the programs
the page starts and leaves running (the fleet helper, Prometheus,
Alertmanager) run as children until the end. A change to the page changes
what runs here.

The test sets what the page says to set: its settings block, the one place
with paths and the hub's address (temporary folders, the test's hub), and
the receivers' URLs (a webhook receiver on loopback). It also moves
Prometheus and Alertmanager from 127.0.0.1:9090 and :9093 to free loopback
ports (tests run side by side), runs Debian's name of Alertmanager's binary,
as the page says, and runs the commands as this user with this virtual
environment's Python and JupyterHub first on PATH and the checkout on
PYTHONPATH. The hub is JupyterHub with its proxy, two users' servers with
both extensions and no Rucio instance (tests/servers/jupyterhub_process.py);
its config is the test's (ports, spawner, an admin service that starts the
servers) plus the page's lines. Nothing else of the page is changed, and
every other shell block names no path of its own.

It ends where the page's smoke test ends: both servers up with their Rucio
routes measured, the user's request counted, Prometheus sending to the
Alertmanager, and the test alert delivered to the operators' receiver. All
on loopback; within 30 s of Prometheus' start (its first scrape, the
alert's group_wait), about a minute in all.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from .servers.alertmanager_process import AlertmanagerProcess, WebhookReceiver
from .servers.child_process import ChildProcess
from .servers.jupyter_server_process import REPO
from .servers.jupyterhub_process import JupyterHubProcess
from .servers.prometheus_process import PrometheusProcess
from .support.deploy_files import uncomment_alerting

PAGE = REPO / "docs" / "jupyterhub.md"
USERS = ["alice", "bob"]
SETTINGS = ["dir", "data", "hub_dir", "hub_url"]
PROMETHEUS_ADDRESS, ALERTMANAGER_ADDRESS = "127.0.0.1:9090", "127.0.0.1:9093"
ROUTES = 16  # rucio-jupyterlab's routes, every one measured


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block, in the page's order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def with_settings(settings: dict[str, str], page_settings: str) -> str:
    """The page's settings block with the test's values (each line ``name=value  # what``)."""
    lines = page_settings.splitlines()
    names = [line.split("=", 1)[0] for line in lines]
    assert names == SETTINGS, f"the settings block changed: {names}"
    return "\n".join(f"{name}={shlex.quote(settings[name])}" for name in names) + "\n"


def is_daemon(block: str) -> bool:
    """A block the page leaves running: one program, started for good."""
    first = block.split()[0]
    return first in ("prometheus", "alertmanager") or ("rucio_metrics.fleet" in block and "--interval" in block)


class Shell:
    """Runs the page's shell blocks the way one shell with the settings would."""

    def __init__(self, settings: str, ports: dict[str, str]) -> None:
        self.settings = settings
        self.ports = ports
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "CONFIGPROXY"))}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
        env["PYTHONPATH"] = str(REPO)  # the checkout under test, as pip would have installed it
        self.env = env

    def on_our_ports(self, text: str) -> str:
        for page_address, address in self.ports.items():
            text = text.replace(page_address, address)
        return text

    def script(self, block: str, replace_the_shell: bool = False) -> str:
        # Debian's package names Alertmanager's binary prometheus-alertmanager (the page says so).
        block = re.sub(r"^alertmanager ", "prometheus-alertmanager ", self.on_our_ports(block), flags=re.M)
        return self.settings + ("exec " if replace_the_shell else "") + block

    def run(self, block: str) -> str:
        done = subprocess.run(["sh", "-e", "-c", self.script(block)], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{block}\n-> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def daemon_command(self, block: str) -> list[str]:
        """The page's command for a program it leaves running: the shell becomes the program."""
        return ["sh", "-c", self.script(block, replace_the_shell=True)]


class _StartedAsThePageSays:
    """A server the page starts with its own command (on this test's port), ready when ``-/ready`` answers 200."""

    def __init__(self) -> None:
        super().__init__({})  # type: ignore[call-arg]
        self.command: list[str] = []
        self.env: dict[str, str] = {}

    def start(self) -> None:
        self.start_and_wait(self.command, self.env,  # type: ignore[attr-defined]
                            lambda: self.session.get(self.url + "-/ready", timeout=2).status_code == 200,  # type: ignore[attr-defined]
                            30)


class PagePrometheus(_StartedAsThePageSays, PrometheusProcess):
    """Prometheus as the page starts it."""


class PageAlertmanager(_StartedAsThePageSays, AlertmanagerProcess):
    """Alertmanager as the page starts it."""


class PageFleetHelper(ChildProcess):
    """The fleet helper as the page runs it, until the targets file lists ``count`` servers."""

    name = "fleet helper"

    def __init__(self, command: list[str], env: dict[str, str], targets: Path, count: int) -> None:
        super().__init__("rucio-metrics-fleet-helper-", "fleet.log")
        self.command, self.env, self.targets, self.count = command, env, targets, count

    def start(self) -> None:
        self.start_and_wait(self.command, self.env, self.lists_every_server, 30)

    def lists_every_server(self) -> bool:
        return self.targets.exists() and len(json.loads(self.targets.read_text())) == self.count


def promtool_results(output: str) -> list[tuple[str, dict[str, str], float]]:
    """``promtool query instant`` lines (``name{labels} => value @[time]``) as (name, labels, value)."""
    results = []
    for name, labels, value in re.findall(r"^(\w*)\{(.*?)\} => (\S+) @", output, re.M):
        results.append((name, dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
    return results


def wait_for(what: str, check: Callable[[], tuple[bool, str]], seconds: float) -> str:
    """``check()``'s output once it says done; AssertionError with its last output if it never does."""
    deadline = time.monotonic() + seconds
    while True:
        done, output = check()
        if done:
            return output
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds:.0f} s; last:\n{output}")
        time.sleep(1)


def receivers_to(config_file: Path, webhook: WebhookReceiver) -> None:
    """Step 7: the receivers' URLs replaced by the webhook receiver's (one path per receiver)."""
    config = yaml.safe_load(config_file.read_text())
    hooks = 0
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook.url + receiver["name"]
            hooks += 1
    assert hooks == 2, "the page says the file has two receivers' url: to replace"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))


OUTSIDE_THE_SETTINGS = re.compile(r"(?<![\w.$])/(etc|var|srv|opt|home)/")


@pytest.fixture
def followed(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Every block of the page run in its order, but the smoke test's last (the queries, polled by the test)."""
    blocks = code_blocks(PAGE.read_text())
    assert blocks[0][0] == "sh", "the page starts with its settings"
    assert blocks[-1][0] == "sh" and "promtool query" in blocks[-1][1], "the page ends with its queries"
    started = time.monotonic()
    folder = tmp_path / "etc-prometheus"
    folder.mkdir()
    with ExitStack() as stack:
        webhook = stack.enter_context(WebhookReceiver())
        hub, prometheus, alertmanager = JupyterHubProcess(), PagePrometheus(), PageAlertmanager()
        for child in (hub, prometheus, alertmanager):  # stopped in reverse; one never started stops harmlessly
            stack.callback(child.stop)
        settings = {"dir": str(folder), "data": str(tmp_path / "var-lib-prometheus"), "hub_dir": str(hub.root),
                    "hub_url": hub.url}
        shell = Shell(with_settings(settings, blocks[0][1]), {
            PROMETHEUS_ADDRESS: f"127.0.0.1:{prometheus.port}", ALERTMANAGER_ADDRESS: f"127.0.0.1:{alertmanager.port}",
        })
        outputs = []
        for language, code in blocks[1:-1]:
            if language == "python":  # step 4: the hub's config, then the hub (re)started
                hub.operator_config = code
                hub.start()
                hub.start_servers(USERS)
                continue
            if language == "yaml":  # step 6: the alerting block, uncommented in the copied config
                config = folder / "jupyterhub-fleet.yml"
                uncommented = uncomment_alerting(config.read_text())
                assert yaml.safe_load(code) == {"alerting": yaml.safe_load(uncommented)["alerting"]}
                config.write_text(shell.on_our_ports(uncommented))
                continue
            assert language == "sh", f"a {language!r} block: this test does not know how to follow it"
            assert not OUTSIDE_THE_SETTINGS.search(code), f"a path outside the settings block:\n{code}"
            if not is_daemon(code):
                if "amtool check-config" in code:  # step 7: the receivers first
                    receivers_to(folder / "alertmanager.yml", webhook)
                outputs.append(shell.run(code))
            elif code.startswith("prometheus "):
                prometheus.command, prometheus.env = shell.daemon_command(code), shell.env
                prometheus.start()
            elif code.startswith("alertmanager "):
                alertmanager.command, alertmanager.env = shell.daemon_command(code), shell.env
                alertmanager.start()
            else:
                targets = folder / "targets" / "jupyterhub.json"
                stack.enter_context(PageFleetHelper(shell.daemon_command(code), shell.env, targets, len(USERS)))
        queries = blocks[-1][1]
        yield {"folder": folder, "hub": hub, "webhook": webhook, "outputs": outputs, "alertmanager": alertmanager,
               "queries": lambda: shell.run(queries), "started": started}


def test_the_operators_path_reaches_a_useful_query_and_a_delivered_test_alert(followed: dict[str, Any]) -> None:
    folder: Path = followed["folder"]
    hub: JupyterHubProcess = followed["hub"]
    # Step 3: each token alone in a file only Prometheus' user reads, and the hub's copies its own.
    prometheus_uid = pwd.getpwnam("prometheus").pw_uid
    for name in ("jupyterhub-scrape-token", "jupyterhub-fleet-token"):
        mine, hubs = folder / name, hub.root / name
        assert (mine.stat().st_mode & 0o777, mine.stat().st_uid) == (0o600, prometheus_uid), name
        assert hubs.stat().st_mode & 0o777 == 0o600 and hubs.read_text() == mine.read_text(), name
    # Step 5: the helper found both servers.
    targets = json.loads((folder / "targets" / "jupyterhub.json").read_text())
    assert sorted(group["labels"]["user"] for group in targets) == USERS
    # The smoke test: the user's request answered...
    [answer] = [o for o in followed["outputs"] if '"instances"' in o]
    assert json.loads(answer)["instances"] == []

    # ...Prometheus sees both servers up, their routes measured, the request, and the Alertmanager...
    def useful() -> tuple[bool, str]:
        output = followed["queries"]()
        results = promtool_results(output)
        up = {labels["instance"]: value for name, labels, value in results if name == "up"}
        routes = {labels["instance"]: value for name, labels, value in results
                  if name == "rucio_jupyterlab_http_instrumented_routes"}
        requests = {(labels["instance"], labels["handler"], labels["status_code"]): value
                    for name, labels, value in results if name == "" and "status_code" in labels}
        alertmanager = f"http://{followed['alertmanager'].url.split('//')[1]}api/v2/alerts"
        return (up == {"alice": 1.0, "bob": 1.0} and routes == {"alice": ROUTES, "bob": ROUTES}
                and requests.get(("alice", "/rucio-jupyterlab/instances", "200")) == 1.0
                and alertmanager in output), output

    output = wait_for("two servers up with their routes, the request counted, and the Alertmanager", useful, 45)
    print(f"\n{output}")
    # ...and the test alert reached the operators' receiver.
    alert = followed["webhook"].wait_for(lambda a: a["labels"]["alertname"] == "RucioMetricsSmokeTest", 45)
    assert (alert["receiver"], alert["status"], alert["labels"]["severity"]) == (
        "jupyterhub-operators", "firing", "warning")
    print(f"test alert delivered to {alert['receiver']}; {time.monotonic() - followed['started']:.0f} s in all")
