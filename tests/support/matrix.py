"""The compatibility matrix: which versions rucio_metrics is tested with, in one place.

``scripts/test-matrix`` runs every case in a throwaway environment of its own
(``tests/matrix_cases.py``); the main suite checks that ``setup.cfg``'s lower
bounds are the ``LOWEST`` case's pins and that the versions table of
README.md and docs/supported-versions.md is ``supported_versions_table()``.

A case pins the four packages rucio_metrics meets at run time. Everything
else in its environment is whatever pip resolves beside those pins.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]

PACKAGES = ("rucio-jupyterlab", "jupyter_server", "tornado", "prometheus_client")

# The newest release of each when the matrix was last updated.
NEWEST = {"rucio-jupyterlab": "41.0.0", "jupyter_server": "2.21.1", "tornado": "6.6.1", "prometheus_client": "0.26.0"}

# The newest releases that install on an older Python, where they differ from
# NEWEST: jupyter_server 2.19 needs Python 3.10 and tornado 6.6 needs 3.11.
NEWEST_ON = {
    "3.9": {"jupyter_server": "2.18.2", "tornado": "6.5.10"},
    "3.10": {"tornado": "6.5.10"},
}

# The oldest releases that install together with a supported rucio-jupyterlab
# and pass: every rucio-jupyterlab from 1.0 on needs JupyterLab 4, which needs
# jupyter_server >= 2.4.0 and tornado >= 6.2.
LOWEST = {"rucio-jupyterlab": "1.4.1", "jupyter_server": "2.4.0", "tornado": "6.2", "prometheus_client": "0.5.0"}

# The rucio-jupyterlab releases tested with the newest of everything else: the
# last of the 1.x line, and the 40.x and 41.x lines.
RUCIO_JUPYTERLAB_LINES = ("1.4.1", "40.0.2", "41.0.0")

# The interpreter the matrix runs under (the project's .venv).
SYSTEM = "system"


@dataclass(frozen=True)
class Case:
    """One environment: a Python (``SYSTEM`` or a pyenv ``major.minor``) and the four pins."""

    name: str
    python: str
    pins: dict[str, str]

    def requirements(self) -> list[str]:
        return [f"{package}=={version}" for package, version in self.pins.items()]


def newest(minor: str) -> dict[str, str]:
    """The newest releases that install on Python ``minor`` (``"3.9"``)."""
    return {**NEWEST, **NEWEST_ON.get(minor, {})}


def system_cases(minor: str) -> list[Case]:
    """The cases on the interpreter the matrix runs under (Python ``minor``): each rucio-jupyterlab line
    with the newest of the rest, and the lowest pins."""
    lines = [
        Case(f"rucio-jupyterlab-{v}", SYSTEM, {**newest(minor), "rucio-jupyterlab": v}) for v in RUCIO_JUPYTERLAB_LINES
    ]
    return [*lines, Case("lowest", SYSTEM, dict(LOWEST))]


def python_cases(minors: list[str]) -> list[Case]:
    """The newest-versions case on each other interpreter (``"3.12"``...) that ``python_requires`` admits."""
    return [Case(f"newest-python{minor}", minor, newest(minor)) for minor in minors]


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return parser


def python_requires() -> SpecifierSet:
    return SpecifierSet(setup_cfg()["options"]["python_requires"])


def install_requires() -> dict[str, Requirement]:
    """``setup.cfg``'s ``install_requires``, by normalised project name."""
    lines = setup_cfg()["options"]["install_requires"].strip().splitlines()
    requirements = (Requirement(line.strip()) for line in lines if line.strip())
    return {normalise(r.name): r for r in requirements}


def normalise(name: str) -> str:
    return name.lower().replace("_", "-")


def admitted(minor: str) -> bool:
    """Whether ``python_requires`` admits Python ``minor`` (``"3.9"``)."""
    return python_requires().contains(f"{minor}.0")


# Python minors the versions table claims, each tested by a newest-versions case
# when pyenv has it, and the system interpreter's by the other cases.
PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


def supported_versions_table() -> str:
    """The versions table of README.md and docs/supported-versions.md, from the definitions above."""
    pythons = [p for p in PYTHONS if admitted(p)]
    rows = [
        "| package | oldest tested | newest tested | also tested |",
        "|---|---|---|---|",
        f"| Python | {pythons[0]} | {pythons[-1]} | {', '.join(pythons[1:-1])} |",
    ]
    for package in PACKAGES:
        also = [v for v in RUCIO_JUPYTERLAB_LINES if v not in (LOWEST[package], NEWEST[package])]
        if package != "rucio-jupyterlab":
            on: dict[str, list[str]] = {}
            for minor, pins in NEWEST_ON.items():
                if package in pins and admitted(minor):
                    on.setdefault(pins[package], []).append(minor)
            also = [f"{version} (newest on Python {', '.join(minors)})" for version, minors in on.items()]
        rows.append(f"| {package} | {LOWEST[package]} | {NEWEST[package]} | {', '.join(also)} |")
    return "\n".join(rows) + "\n"
