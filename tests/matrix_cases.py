"""The compatibility matrix, run by ``scripts/test-matrix`` (not by the main suite).

Each case of ``tests/support/matrix.py`` gets a cached virtual environment with its
pins and rucio_metrics installed from a wheel of this checkout (not
editable); a real ``jupyter server`` from that environment, with
rucio-jupyterlab's instances pointing at a real Rucio server, at a Rucio
that does not answer and at the Rucio stand-in (for a dropped connection),
serves a small fixed mix of requests, and the test
asserts every counter rucio_metrics exports, ``instrumented_routes``, and a
server log without rucio_metrics warnings or errors.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from packaging.version import Version

import rucio_metrics
from rucio_metrics.outbound import OPERATIONS

from .servers.jupyter_server_process import JupyterServerProcess, unreachable_rucio_instance
from .servers.rucio_server import RucioServer
from .support.interpreters import Interpreter, choose, missing, system
from .support.matrix import PYTHONS, REPO, SYSTEM, Case, admitted, python_cases, system_cases
from .support.matrix_envs import build_wheel, environment, key, pip_env, prune, run
from .support.route_samples import Samples, changes, expect, inbound, outbound
from .support.route_samples import key as sample_key
from .support.rucio_standin import RucioStandIn, userpass_credentials


@functools.cache
def interpreters() -> dict[str, Interpreter]:
    """The system interpreter and pyenv's, by minor (``SYSTEM`` for the system one)."""
    chosen, _ = choose(admitted)
    return {SYSTEM: system(), **{i.minor: i for i in chosen}}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        found = interpreters()
        cases = system_cases(found[SYSTEM].minor) + python_cases([minor for minor in found if minor != SYSTEM])
        prune({key(c, found[c.python]) for c in cases})
        metafunc.parametrize("case", cases, ids=[c.name for c in cases])


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """One wheel of this checkout for every case, in the run's folder that the workers share."""
    run_folder = tmp_path_factory.getbasetemp()
    return build_wheel(REPO, (run_folder if worker_id == "master" else run_folder.parent) / "wheel")


@pytest.fixture(scope="session")
def rucio() -> Iterator[RucioServer]:
    """One real Rucio server for every case."""
    with RucioServer() as server:
        yield server


@pytest.fixture(scope="session")
def standin() -> Iterator[RucioStandIn]:
    """The Rucio stand-in, for the one injected fault."""
    with RucioStandIn() as server:
        yield server


def test_interpreters_besides_the_system_one_are_found() -> None:
    chosen, report = choose(admitted)
    assert chosen, "\n".join(report)
    # Every Python the supported-versions table claims has its case.
    assert missing(chosen, PYTHONS, admitted) == [], "\n".join(report)


# rucio_metrics' own warnings and errors ("rucio_metrics: ...") and jupyter_server's about
# loading it ("rucio_metrics | extension failed ..."). docs/supported-versions.md documents none for
# supported versions (all routes and RucioAPI methods are found).
OUR_MESSAGE = re.compile(r"^\[[WEC] [^\]]*\] rucio_metrics\b")
FRAME = re.compile(r'^\s*File "([^"]+)", line \d+', re.M)


def rucio_metrics_problems(log: str) -> list[str]:
    """Our warnings and errors, and every traceback whose exception was raised in rucio_metrics' code.

    A traceback that only passes through our wrappers (an upstream exception
    from a measured ``RucioAPI`` call) is upstream's, not ours.
    """
    found = [line for line in log.splitlines() if OUR_MESSAGE.search(line)]
    for traceback in log.split("Traceback (most recent call last):")[1:]:
        frames = FRAME.findall(traceback)
        if frames and "/rucio_metrics/" in frames[-1]:
            found.append(f"an exception raised in {frames[-1]}")
    return found


def the_mix(server: JupyterServerProcess, rucio: RucioServer, standin: RucioStandIn, rucio_jupyterlab: str) -> Samples:
    """The fixed mix of requests; returns the counters it must add, from zero.

    rucio-jupyterlab 40 added ``RucioAPIHandler.prepare()``, which rejects a
    call without a namespace (400) or without stored credentials (401)
    before the verb runs. In 1.4.1 the verb itself answers 400 for the
    missing namespace, and the call without credentials reaches
    ``RucioAPI``, whose ``authenticate`` fails before sending anything, and
    so ``get_scopes`` (both ``error``): a 500.

    A connection dropped after a good login (the stand-in's injected fault)
    is a 503 from 40 on; 1.4.1 builds its transport exception with the
    wrong arguments, so a ``TypeError`` escapes as a 500. Both count
    ``get_scopes`` as ``connection_error``.
    """
    rejects_in_prepare = Version(rucio_jupyterlab) >= Version("40")
    no_credentials = 401 if rejects_in_prepare else 500
    dropped = inbound("GET", "list-scopes", 503, fault="service") if rejects_in_prepare else inbound(
        "GET", "list-scopes", 500, exception="TypeError", fault="service"
    )
    # Before 40 the call without credentials goes as far as RucioAPI, which fails (error): the service's.
    no_credentials_fault = "user" if rejects_in_prepare else "service"
    anonymous = requests.Session()
    anonymous.trust_env = False
    assert anonymous.get(server.url("rucio-jupyterlab/instances"), timeout=30).status_code == 403
    assert server.request("GET", "rucio-jupyterlab/instances").status_code == 200
    # prepare(): 400 without a namespace, 401 before credentials are stored.
    assert server.request("GET", "rucio-jupyterlab/list-scopes").status_code == 400
    response = server.request("GET", "rucio-jupyterlab/list-scopes", params={"namespace": "atlas"})
    assert response.status_code == no_credentials
    # The Rucio UI picks an instance and its auth type first (no call to Rucio).
    assert server.request("PUT", "rucio-jupyterlab/instances", json={"instance": "atlas", "auth": "userpass"}).ok
    # Storing credentials logs in to Rucio at once; then a call that goes to Rucio.
    assert server.request("PUT", "rucio-jupyterlab/auth", json=rucio.userpass_credentials("atlas")).status_code == 200
    response = server.request("GET", "rucio-jupyterlab/list-scopes", params={"namespace": "atlas"})
    assert response.status_code == 200 and response.json()["scopes"] == ["user.alice", "data18", "mc16"]
    # A Rucio that does not answer: the login fails on the connection.
    assert server.request("PUT", "rucio-jupyterlab/auth", json=rucio.userpass_credentials("offline")).status_code == 401
    # A Rucio that drops the connection of a call after the login.
    assert server.request("PUT", "rucio-jupyterlab/auth", json=userpass_credentials("faulty")).status_code == 200
    standin.drop("GET /scopes/?$", times=1)  # 1.4.1 asks for /scopes, 40 on for /scopes/
    response = server.request("GET", "rucio-jupyterlab/list-scopes", params={"namespace": "faulty"})
    assert response.status_code == (503 if rejects_in_prepare else 500)
    return expect(
        inbound("GET", "instances", 403, fault="user"),
        inbound("GET", "instances", 200),
        inbound("PUT", "instances", 200),
        inbound("GET", "list-scopes", 400, fault="user"),
        inbound("GET", "list-scopes", no_credentials, fault=no_credentials_fault),
        {} if rejects_in_prepare else expect(
            outbound("atlas", "get_scopes", "error"), outbound("atlas", "authenticate", "error")
        ),
        inbound("PUT", "auth", 200, times=2),
        inbound("PUT", "auth", 401, fault="service"),  # the login could not reach Rucio
        inbound("GET", "list-scopes", 200),
        # The login tried by PUT auth is not kept: the first call logs in again.
        outbound("atlas", "authenticate", times=2),
        outbound("atlas", "get_scopes"),
        outbound("offline", "authenticate", "connection_error"),
        dropped,
        outbound("faulty", "authenticate", times=2),
        outbound("faulty", "get_scopes", "connection_error"),
    )


def installed_rucio_metrics(python: Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(python), "-c", "import rucio_metrics; print(rucio_metrics.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=cwd, env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def build_info(server: JupyterServerProcess) -> dict[str, str]:
    """The labels of the server's one ``rucio_metrics_build_info`` series."""
    [(name, labels)] = server.samples("rucio_metrics_")
    assert name == "rucio_metrics_build_info"
    return dict(labels)


# First of the slow ones: a worker takes it (about a minute of pip's) while the other starts on the cases.
def test_pip_refuses_the_0x_line(wheel: Path, tmp_path: Path) -> None:
    """rucio-jupyterlab 0.x pins jupyter_server < 2 (it is built for JupyterLab 3); rucio_metrics needs
    jupyter_server >= 2.4.0, so pip refuses the pair before installing anything. 0.10.0 is the last 0.x."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], 120)
    python = str(venv / "bin" / "python")
    done = subprocess.run(
        [python, "-m", "pip", "install", str(wheel), "rucio-jupyterlab==0.10.0"],
        env=pip_env(), capture_output=True, text=True, timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "ResolutionImpossible" in output, output
    assert re.search(r"rucio-jupyterlab 0\.10\.0 depends on jupyter[-_]server<2", output, re.I), output
    assert "rucio_metrics" not in run([python, "-m", "pip", "list"], 120).replace("-", "_")


def test_case(case: Case, wheel: Path, rucio: RucioServer, standin: RucioStandIn, tmp_path: Path) -> None:
    interpreter = interpreters()[case.python]
    start = time.monotonic()
    with environment(case, interpreter, wheel) as (env, created):
        ready = time.monotonic() - start
        assert env.versions(list(case.pins)) == case.pins
        # The wheel's copy, not the checkout.
        assert installed_rucio_metrics(env.python, tmp_path).startswith(str(env.root / "lib"))
        instances = [
            rucio.instance_config("atlas"), unreachable_rucio_instance("offline"), standin.instance_config("faulty")
        ]
        with JupyterServerProcess(rucio_instances=instances, python=str(env.python)) as server:
            try:
                samples = server.samples()
                assert samples[sample_key("rucio_jupyterlab_http_instrumented_routes")] == 16
                # What the fleet's version panel shows of this server: exactly the case's pins.
                assert build_info(server) == {
                    "version": rucio_metrics.__version__,
                    "rucio_jupyterlab_version": case.pins["rucio-jupyterlab"],
                    "jupyter_server_version": case.pins["jupyter_server"],
                    "python_version": interpreter.version,
                }
                expected = the_mix(server, rucio, standin, case.pins["rucio-jupyterlab"])
                assert changes(samples, server.samples()) == expected
            except BaseException:
                print(server.log()[-6000:])
                raise
            log = server.log()
        assert rucio_metrics_problems(log) == [], log[-6000:]
        assert "rucio_metrics: instrumented 16 routes" in log
        assert f"rucio_metrics: measuring calls to Rucio: {', '.join(OPERATIONS)}" in log, log[-6000:]
    made = f"created in {created:.0f} s" if created else "cached"
    print(f"\n{case.name} on Python {interpreter.version}: environment {made}, ready in {ready:.0f} s, "
          f"whole case {time.monotonic() - start:.0f} s")
