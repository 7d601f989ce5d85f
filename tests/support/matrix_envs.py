"""Virtual environments for the compatibility matrix, cached between runs.

An environment is created once per (interpreter, pins, ``setup.cfg``
requirements) and kept under ``CACHE`` (outside the clone, so a fresh clone
reuses it), keyed by a hash of those. Creating one is bounded by
``CREATE_SECONDS``; a half-made one (no ``ready`` marker) is made again.
Each use reinstalls rucio_metrics from the wheel under test (not editable,
without touching the other packages), then checks that pip sees no broken
requirement and that the pins are what is installed. A lock file keeps two
runs from using one environment at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .interpreters import Interpreter
from .matrix import Case, install_requires, python_requires

# Read at import: the tests' fixtures point HOME at a temporary folder, and pip's
# download cache lives in the real one.
REAL_HOME = Path.home()
CACHE = Path(
    os.environ.get("RUCIO_METRICS_MATRIX_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or REAL_HOME / ".cache") / "rucio_metrics-matrix"
)
CREATE_SECONDS = 900
PRUNE_AFTER_DAYS = 14
# Bump when the way an environment is made changes, so old ones are not reused.
FORMAT = 1


def key(case: Case, interpreter: Interpreter) -> str:
    """The cache folder name of ``case`` on ``interpreter``."""
    identity = {
        "format": FORMAT,
        "python": [interpreter.path, interpreter.version],
        "pins": case.requirements(),
        "install_requires": sorted(str(r) for r in install_requires().values()),
        "python_requires": str(python_requires()),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"{case.name}-{digest}"


def pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HOME=str(REAL_HOME), PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def run(command: list[str], timeout: float, log: Path | None = None) -> str:
    """Run ``command``; raise with its output (or the tail of ``log``) if it fails or times out."""
    try:
        done = subprocess.run(command, env=pip_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{' '.join(command)} did not finish within {timeout:.0f} s") from e
    output = done.stdout + done.stderr
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(command)}\n{output}\n")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{output[-6000:]}")
    return output


class MatrixEnv:
    """One cached environment; ``python`` is its interpreter."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / "bin" / "python"

    def versions(self, packages: list[str]) -> dict[str, str]:
        """The installed version of each of ``packages``."""
        script = (
            "import json, sys, importlib.metadata as m; "
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
        )
        return dict(json.loads(run([str(self.python), "-c", script, *packages], 60).strip().splitlines()[-1]))


@contextmanager
def environment(case: Case, interpreter: Interpreter, wheel: Path) -> Iterator[tuple[MatrixEnv, float]]:
    """The environment of ``case``, made if needed, with ``wheel`` freshly installed.

    Yields it and the seconds spent creating it (0 when it was cached).
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    name = key(case, interpreter)
    root = CACHE / name
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        created = 0.0
        if not (root / "ready").exists():
            start = time.monotonic()
            create(root, case, interpreter, wheel)
            created = time.monotonic() - start
        env = MatrixEnv(root)
        log = root / "use.log"
        log.write_text("")
        run([str(env.python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], 300, log)
        run([str(env.python), "-m", "pip", "check"], 120, log)
        (root / "ready").touch()  # its mtime says when it was last used, for pruning
        yield env, created


def build_wheel(repo: Path, out: Path) -> Path:
    """The wheel of ``repo`` in ``out``, built by the first caller; the others (workers sharing ``out``)
    wait for it and take the same one."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not list(out.glob("rucio_metrics-*.whl")):  # a failed build leaves none: the next caller tries again
            run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(repo)], 600)
    (built,) = out.glob("rucio_metrics-*.whl")
    return built


def create(root: Path, case: Case, interpreter: Interpreter, wheel: Path) -> None:
    """A new venv at ``root`` with the pins and ``wheel``, resolved together by pip."""
    shutil.rmtree(root, ignore_errors=True)
    deadline = time.monotonic() + CREATE_SECONDS
    run([interpreter.path, "-m", "venv", str(root)], 120)
    log = root / "create.log"
    python = str(root / "bin" / "python")
    # The pip an older Python ships (23.0 with 3.9) backtracks for minutes over releases that need a newer Python.
    run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], deadline - time.monotonic(), log)
    run([python, "-m", "pip", "install", "-q", *case.requirements(), str(wheel)], deadline - time.monotonic(), log)
    (root / "ready").touch()


def prune(keep: set[str]) -> list[str]:
    """Remove cached environments not in ``keep`` and unused for ``PRUNE_AFTER_DAYS``; returns their names."""
    if not CACHE.is_dir():
        return []
    cutoff = time.time() - PRUNE_AFTER_DAYS * 86400
    removed = []
    for root in CACHE.iterdir():
        if root.is_dir() and root.name not in keep:
            ready = root / "ready"
            if (ready if ready.exists() else root).stat().st_mtime < cutoff:
                shutil.rmtree(root, ignore_errors=True)
                (CACHE / f"{root.name}.lock").unlink(missing_ok=True)
                removed.append(root.name)
    return removed
