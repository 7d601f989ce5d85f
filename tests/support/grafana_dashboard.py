"""What Grafana's types cannot see in a dashboard: its ids, layout, data sources, variables and PromQL.

Each check takes a dashboard (its parsed JSON) and returns its problems, [] when
there are none, each naming where (a JSON path, and the panel's title), so that a
test can break a copy one way and see exactly that reported. ``expression_problems``
parses with promtool, the variables filled in as ``fill_variables`` does.
"""

from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .deploy_files import fill_variables, promtool

GRID_COLUMNS = 24
# Data sources every Grafana has, by uid (and the name older dashboards give).
BUILTIN_DATASOURCES = {"grafana", "-- Grafana --", "-- Mixed --", "-- Dashboard --"}
# Grafana's global variables, and those of data links, which a dashboard uses without defining them.
BUILTIN_VARIABLES = {
    "__dashboard", "__from", "__to", "__interval", "__interval_ms", "__rate_interval", "__rate_interval_ms",
    "__range", "__range_s", "__range_ms", "__timeFilter", "timeFilter", "__timezone", "__name", "__org", "__user",
    "__all_variables", "__url_time_range", "__series", "__field", "__value", "__data", "__url", "__searchFilter",
}
# Grafana's own pattern of a variable reference: $name, [[name]] or [[name:format]], ${name}, ${name.field},
# ${name:format}.
_REFERENCE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::\w+)?\]\]|\$\{(\w+)(?:\.[^:^}]+)?(?::[^}]+)?\}")
_DATASOURCE_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+)\]\]|\$\{(\w+)\}")
# The fields whose text Grafana fills variables into.
_INTERPOLATED = {"title", "description", "expr", "legendFormat", "query", "definition", "interval", "url", "uid"}
# A query variable's PromQL: the series selector of label_values(<selector>, <label>), or query_result(<expr>).
_VARIABLE_QUERY = re.compile(r"\s*(?:label_values\((?P<selector>.+),\s*\w+\s*\)|query_result\((?P<expr>.+)\))\s*")
_PROMTOOL_PROBLEM = re.compile(r'group "(?P<group>\d+)", rule \d+, "[^"]*": (?P<problem>.+)$')


def panels(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(path, panel)`` of every panel: the rows, and the panels inside collapsed rows too."""
    for index, panel in enumerate(dashboard.get("panels", [])):
        yield f"/panels/{index}", panel
        for inner, child in enumerate(panel.get("panels", []) if panel.get("type") == "row" else []):
            yield f"/panels/{index}/panels/{inner}", child


def label(path: str, panel: dict[str, Any]) -> str:
    return f"{path} {panel.get('title', '')!r}"


def _fields(value: Any, names: set[str], path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, value)`` of every field called one of ``names``, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in names:
                yield f"{path}/{key}", item
            yield from _fields(item, names, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _fields(item, names, f"{path}/{index}")


def _variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard.get("templating", {}).get("list", []))


def id_problems(dashboard: dict[str, Any]) -> list[str]:
    """Panel ids used twice, rows and the panels inside rows counted: Grafana tells panels apart by id."""
    paths = defaultdict(list)
    for path, panel in panels(dashboard):
        if panel.get("id") is not None:
            paths[panel["id"]].append(label(path, panel))
    return [f"id {id_} is on {', '.join(on)}" for id_, on in paths.items() if len(on) > 1]


def _rectangle(path: str, panel: dict[str, Any], problems: list[str]) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` a panel takes on the grid: a row takes the whole width and one unit whatever it says."""
    position = panel.get("gridPos")
    if not isinstance(position, dict):
        problems.append(f"{label(path, panel)} has no gridPos")
        return None
    x, y, w, h = (position.get(key) for key in "xywh")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (x, y, w, h)):
        problems.append(f"{label(path, panel)}: gridPos x, y, w and h are not all whole numbers")
        return None
    if panel.get("type") == "row":
        return 0, y, GRID_COLUMNS, 1
    if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
        problems.append(f"{label(path, panel)}: gridPos {x=} {w=} {y=} {h=} is not within the {GRID_COLUMNS} columns")
        return None
    return x, y, w, h


def _overlaps(placed: list[tuple[str, tuple[int, int, int, int]]]) -> list[str]:
    problems = []
    for index, (a, (ax, ay, aw, ah)) in enumerate(placed):
        for b, (bx, by, bw, bh) in placed[index + 1:]:
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                problems.append(f"{a} and {b} overlap")
    return problems


def layout_problems(dashboard: dict[str, Any]) -> list[str]:
    """Panels off the grid or on top of each other.

    Grafana lays out the top-level list, rows included; a collapsed row keeps
    its panels inside it, laid out among themselves below it when it opens,
    and an expanded row has its panels after it in the top-level list.
    """
    problems: list[str] = []
    top = []
    for index, panel in enumerate(dashboard.get("panels", [])):
        path = f"/panels/{index}"
        if (rectangle := _rectangle(path, panel, problems)) is not None:
            top.append((label(path, panel), rectangle))
        if panel.get("type") != "row":
            continue
        if panel.get("panels") and not panel.get("collapsed"):
            problems.append(f"{label(path, panel)} is expanded, so Grafana does not show the panels inside it")
        inside = []
        for inner, child in enumerate(panel.get("panels", [])):
            child_path = f"{path}/panels/{inner}"
            if (rectangle := _rectangle(child_path, child, problems)) is not None:
                inside.append((label(child_path, child), rectangle))
        problems += _overlaps(inside)
    return problems + _overlaps(top)


def datasource_problems(dashboard: dict[str, Any]) -> list[str]:
    """References to a data source that is neither a data source variable of the dashboard nor built in.

    A shipped dashboard cannot know the uids of its users' data sources, so
    every other uid is one that exists only where the dashboard was made.
    """
    plugins = {v["name"]: v.get("query") for v in _variables(dashboard) if v.get("type") == "datasource"}
    problems = []
    for path, ref in _fields(dashboard, {"datasource"}):
        uid, plugin = (ref.get("uid"), ref.get("type")) if isinstance(ref, dict) else (ref, None)
        if uid is None or uid in BUILTIN_DATASOURCES:
            continue  # None: the default data source
        match = _DATASOURCE_VARIABLE.fullmatch(str(uid))
        name = next((group for group in match.groups() if group), None) if match else None
        if name not in plugins:
            problems.append(f"{path}: {uid!r} is no data source variable of the dashboard nor a built-in data source")
        elif plugin is not None and plugin != plugins[name]:
            problems.append(f"{path}: a {plugin!r} data source, but ${name} lists {plugins[name]!r} ones")
    return problems


def variable_problems(dashboard: dict[str, Any]) -> list[str]:
    """References to a variable that is neither in ``templating.list`` nor one of Grafana's own."""
    defined = {v["name"] for v in _variables(dashboard)}
    problems = []
    for path, text in _fields(dashboard, _INTERPOLATED):
        for match in _REFERENCE.finditer(text if isinstance(text, str) else ""):
            name = next(group for group in match.groups() if group)
            # $1 and the like are a regex's groups (label_replace), which Grafana leaves alone.
            if name not in defined and name not in BUILTIN_VARIABLES and not name.isdigit():
                problems.append(f"{path}: {match[0]} is no variable of the dashboard nor one of Grafana's")
    for path, panel in panels(dashboard):
        if panel.get("repeat") and panel["repeat"] not in defined:
            problems.append(f"{label(path, panel)} repeats for {panel['repeat']!r}, no variable of the dashboard")
    return problems


def _plugin(ref: Any) -> Any:
    return ref.get("type") if isinstance(ref, dict) else None


def expressions(dashboard: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """``(path, PromQL)`` of every panel query and query variable, and the Prometheus queries with no expr."""
    found, missing = [], []
    for path, panel in panels(dashboard):
        for index, target in enumerate(panel.get("targets", [])):
            plugin = _plugin(target.get("datasource") or panel.get("datasource"))
            if plugin not in ("prometheus", None):
                continue  # another query language
            if "expr" in target:
                found.append((f"{path}/targets/{index}/expr", target["expr"]))
            elif plugin == "prometheus":
                missing.append(f"{label(path, panel)}: its Prometheus query {target.get('refId')!r} has no expr")
    for index, variable in enumerate(_variables(dashboard)):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if (variable.get("type") == "query" and _plugin(variable.get("datasource")) in ("prometheus", None)
                and (match := _VARIABLE_QUERY.fullmatch(str(query)))):
            found.append((f"/templating/list/{index}/query", match["selector"] or match["expr"]))
    return found, missing


def expression_problems(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL that does not parse (promtool, as a recording rule each), and Prometheus queries with none."""
    found, problems = expressions(dashboard)
    groups = []
    paths = []
    for path, expr in found:
        try:
            filled = fill_variables(expr)
        except AssertionError as error:
            problems.append(f"{path}: {error}")
            continue
        groups.append({"name": str(len(groups)), "rules": [{"record": "dashboard_expression", "expr": filled}]})
        paths.append(path)
    with tempfile.TemporaryDirectory() as folder:
        rules = Path(folder) / "dashboard-expressions.yml"
        rules.write_text(yaml.safe_dump({"groups": groups}))
        result = promtool("check", "rules", "--lint=none", str(rules))
    parsed = [_PROMTOOL_PROBLEM.search(line) for line in result.stderr.splitlines()]
    problems += [f"{paths[int(match['group'])]}: {match['problem']}" for match in parsed if match]
    assert (result.returncode == 0) == (not any(parsed)), result.stdout + result.stderr
    return problems
