"""Grafana dashboards type-checked against Grafana's own published types, since no Grafana runs here.

The npm package ``@grafana/schema`` holds the TypeScript types generated from
Grafana's dashboard schema and from each core panel plugin's options;
``grafana_dashboard_types.ts`` narrows them as far as the package allows. Each
dashboard is written out as a TypeScript object literal (so ``"type": "timeseries"``
stays a literal string and an unknown field is an excess property) that must
satisfy them, and one strict ``tsc --noEmit`` checks them all. ``scripts/bootstrap``
installs the package and ``typescript`` into ``.node/``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from .kubernetes_schemas import NODE_PACKAGES

NODE_MODULES = NODE_PACKAGES / "node_modules"
TYPES = Path(__file__).with_name("grafana_dashboard_types.ts")
TSC = NODE_MODULES / "typescript" / "bin" / "tsc"
# The package's exports give a "types" condition per subpath, which only these resolutions read.
TSCONFIG = {
    "compilerOptions": {
        "strict": True, "noEmit": True, "target": "es2022", "module": "esnext", "moduleResolution": "bundler",
        "types": [], "lib": ["es2022"],
        # For the package's own .d.ts files only: the generated files and TYPES are still checked.
        "skipLibCheck": True,
    },
}
HEADER = [
    'import type { CheckedDashboard, PublishedDashboard } from "./grafana_dashboard_types";',
    "export const dashboard =",
]
# tsc ends an expression at a line break before `satisfies`: this goes on the literal's last line.
SATISFIES = " satisfies CheckedDashboard;"
# Assignability only (no excess-property check: the value is no longer a fresh literal).
FOOTER = ["dashboard satisfies PublishedDashboard;"]
_DIAGNOSTIC = re.compile(r"^(?P<file>[^(]+)\((?P<line>\d+),\d+\): error (?P<code>TS\d+): (?P<message>.*)$")


def package_version(name: str) -> str:
    return str(json.loads((NODE_MODULES / name / "package.json").read_text())["version"])


def _literal(value: Any, path: str, lines: list[tuple[str, str]], prefix: str = "", suffix: str = "") -> None:
    """``value`` as TypeScript lines, one per field, each with the path of the field it holds."""
    if isinstance(value, dict) and value:
        lines.append((path, prefix + "{"))
        for key, item in value.items():
            _literal(item, f"{path}/{key}", lines, json.dumps(key) + ": ", ",")
        lines.append((path, "}" + suffix))
    elif isinstance(value, list) and value:
        lines.append((path, prefix + "["))
        for index, item in enumerate(value):
            _literal(item, f"{path}/{index}", lines, "", ",")
        lines.append((path, "]" + suffix))
    else:
        lines.append((path, prefix + json.dumps(value) + suffix))


def _shortened(message: str) -> str:
    # tsc spells out whole object types; the path already says where.
    return re.sub(r"'([^']{100})[^']+'", r"'\1...'", message)


def type_problems(dashboards: dict[str, Any], folder: Path) -> dict[str, list[str]]:
    """``{name: problems}`` of each dashboard against the types, ``"<path>: <tsc's message>"``; [] when valid.

    What only ``Dashboard`` (the package's index export) rejects has the path ``Dashboard``; it is left out
    where ``CheckedDashboard`` already rejects something, which it would only repeat without a path.
    """
    (folder / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    (folder / TYPES.name).write_text(TYPES.read_text())
    files: dict[str, tuple[str, list[str]]] = {}
    for index, (name, dashboard) in enumerate(dashboards.items()):
        lines: list[tuple[str, str]] = []
        _literal(dashboard, "", lines)
        source = [*HEADER, *(text for _, text in lines[:-1]), lines[-1][1] + SATISFIES, *FOOTER]
        paths = [*([""] * len(HEADER)), *(path or "/" for path, _ in lines), *(["Dashboard"] * len(FOOTER))]
        files[f"dashboard_{index}.ts"] = name, paths
        (folder / f"dashboard_{index}.ts").write_text("\n".join(source) + "\n")
    (folder / "tsconfig.json").write_text(json.dumps({**TSCONFIG, "files": sorted(files)}))
    result = subprocess.run(["node", str(TSC), "--project", str(folder), "--pretty", "false"], cwd=folder,
                            capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode == 0) == (not result.stdout), result.stdout + result.stderr
    diagnostics: list[list[str]] = []  # each: its line, then the indented lines elaborating it
    for line in result.stdout.splitlines():
        if line.startswith(" ") and diagnostics:
            diagnostics[-1].append(line.strip())
        else:
            diagnostics.append([line])
    found: dict[str, list[str]] = {name: [] for name in dashboards}
    for first, *elaboration in diagnostics:
        match = _DIAGNOSTIC.match(first)
        # One on anything but a dashboard's own lines (the types, an import) is a broken setup.
        assert match and match["file"] in files, result.stdout
        name, paths = files[match["file"]]
        path = paths[int(match["line"]) - 1]
        assert path, result.stdout
        found[name].append(_shortened(" ".join([f"{path}: {match['message']}", *elaboration])))
    return {name: [p for p in problems if not p.startswith("Dashboard: ")] or problems
            for name, problems in found.items()}
