"""The set-up's virtual environments as the tests' processes use them: their bytecode compiled at install.

Where ``PYTHONDONTWRITEBYTECODE`` is set, an import writes no ``.pyc``: a module
installed without one is compiled again by every process that imports it (a
Rucio client took 2.6 s to import, 1.2 s compiled).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .servers.jupyter_server_process import REPO
from .servers.rucio_server import rucio_python

# What a process of each environment imports: a Jupyter server with the extensions, a Rucio client,
# server and set-up step.
IMPORTS = {
    "suite": "import jupyter_server.serverapp, rucio_jupyterlab.server, prometheus_client, rucio.client",
    "rucio": "import rucio.client, rucio.common.utils, flask, sqlalchemy, alembic",
}

UNCOMPILED = """
import importlib.util, json, os, sys
{imports}
site = os.path.join(sys.prefix, "lib")
print(json.dumps(sorted(
    m.__name__ for m in list(sys.modules.values())
    if (getattr(m, "__file__", None) or "").endswith(".py") and m.__file__.startswith(site)
    and not os.path.exists(importlib.util.cache_from_source(m.__file__))
)))
"""


def uncompiled_imports(python: Path, imports: str) -> list[str]:
    """The modules from the environment's own folder that ``imports`` loads with no bytecode beside them."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(python), "-c", UNCOMPILED.format(imports=imports)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@pytest.mark.parametrize("name", sorted(IMPORTS))
def test_what_a_process_imports_is_compiled(name: str) -> None:
    python = {"suite": REPO / ".venv" / "bin" / "python", "rucio": rucio_python()}[name]
    uncompiled = uncompiled_imports(python, IMPORTS[name])
    assert uncompiled == [], f"{len(uncompiled)} modules without bytecode: {uncompiled[:20]}"
