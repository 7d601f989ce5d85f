"""The Python interpreters the compatibility matrix can use: pyenv's, besides the one it runs under.

>>> Interpreter("/opt/python3", "3.12.1").minor
'3.12'
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# Read at import: the tests run with a temporary HOME, where pyenv would look in vain.
REAL_HOME = Path.home()


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def system() -> Interpreter:
    """The interpreter the matrix runs under: the one behind the project's .venv.

    Resolved through the venv's link, so the cache key of its environments does not
    depend on where the checkout is (every CI run is a fresh clone in a new folder).
    """
    return Interpreter(str(Path(sys.executable).resolve()), ".".join(map(str, sys.version_info[:3])))


def pyenv_root(home: Path) -> Path | None:
    """``pyenv root``; ``home`` is the user's real home, for when pyenv is not on PATH."""
    pyenv = shutil.which("pyenv")
    if pyenv is not None:
        done = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "HOME": str(home)})
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.strip())
    root = Path(os.environ.get("PYENV_ROOT") or home / ".pyenv")
    return root if (root / "versions").is_dir() else None


def pyenv_interpreters(root: Path | None) -> list[Interpreter]:
    """Every CPython under ``<pyenv root>/versions``, oldest first, as each reports its version."""
    if root is None:
        return []
    found = []
    for python in sorted((root / "versions").glob("*/bin/python3")):
        done = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True, text=True, timeout=30,
        )
        if done.returncode == 0:
            found.append(Interpreter(str(python), done.stdout.strip()))
    return sorted(found, key=lambda i: tuple(int(p) for p in i.version.split(".")))


def choose(admits: Callable[[str], bool]) -> tuple[list[Interpreter], list[str]]:
    """pyenv's interpreters to run the newest-versions case on, one per minor, and a report of what was found.

    ``admits(minor)`` says whether ``python_requires`` admits a minor; the
    system interpreter's minor is left to the system cases.
    """
    own = system()
    report = [f"system: Python {own.version} ({own.path})"]
    root = pyenv_root(REAL_HOME)
    if root is None:
        report.append("pyenv: not found")
        return [], report
    chosen: dict[str, Interpreter] = {}
    for interpreter in pyenv_interpreters(root):
        if not admits(interpreter.minor):
            verdict = "not admitted by python_requires"
        elif interpreter.minor == own.minor:
            verdict = "same minor as the system one: covered by the system cases"
        else:
            chosen[interpreter.minor] = interpreter  # the newest patch release of each minor wins
            verdict = "used"
        report.append(f"pyenv: Python {interpreter.version} ({interpreter.path}): {verdict}")
    return list(chosen.values()), report


def missing(chosen: list[Interpreter], claimed: Iterable[str], admits: Callable[[str], bool]) -> list[str]:
    """The Python minors in ``claimed`` (and admitted) that neither the system nor ``chosen`` provides."""
    have = {system().minor, *(i.minor for i in chosen)}
    return [minor for minor in claimed if admits(minor) and minor not in have]


def main() -> int:
    from .matrix import PYTHONS, admitted

    chosen, report = choose(admitted)
    print("compatibility matrix interpreters:")
    for line in report:
        print("  " + line)
    absent = missing(chosen, PYTHONS, admitted)
    if absent:
        # The supported-versions table claims every one of them: each must be tested.
        print(f"no interpreter for Python {', '.join(absent)}: install pyenv's CPython {', '.join(absent)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
