"""deploy/grafana/rucio-jupyterlab.json against Grafana's published types, and its own references.

No Grafana runs here. tsc checks the dashboard, and the copy the ConfigMap carries,
against the npm package @grafana/schema (tests/support/grafana_schema.py); Python and
promtool check what types cannot see: ids, layout, data sources, variables and PromQL
(tests/support/grafana_dashboard.py). A copy broken one way at a time shows that each
check reports exactly that break. That every query returns data from a real Prometheus
is test_prometheus.py's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from .support.broken_copy import broken
from .support.deploy_files import DASHBOARD, dashboard, kubernetes_objects
from .support.grafana_dashboard import (
    GRID_COLUMNS,
    datasource_problems,
    expression_problems,
    expressions,
    id_problems,
    label,
    layout_problems,
    panels,
    variable_problems,
)
from .support.grafana_schema import package_version, type_problems

Dashboard = dict[str, Any]


def first(board: Dashboard, panel_type: str) -> int:
    """The index of the dashboard's first top-level panel of ``panel_type``."""
    return next(i for i, panel in enumerate(board["panels"]) if panel["type"] == panel_type)


def plain_panels(board: Dashboard) -> list[int]:
    return [i for i, panel in enumerate(board["panels"]) if panel["type"] != "row"]


def at(board: Dashboard, index: int) -> str:
    return label(f"/panels/{index}", board["panels"][index])


def collapsed(board: Dashboard) -> Dashboard:
    """``board`` with every row collapsed, as Grafana saves it: each row holds the panels up to the next row."""
    result = copy.deepcopy(board)
    kept: list[dict[str, Any]] = []
    for panel in result["panels"]:
        if panel["type"] == "row":
            panel["collapsed"] = True
            kept.append(panel)
        elif kept and kept[-1]["type"] == "row":
            kept[-1]["panels"].append(panel)
        else:
            kept.append(panel)
    result["panels"] = kept
    return result


@pytest.fixture(scope="module")
def board() -> Dashboard:
    result: Dashboard = dashboard()
    return result


# Against @grafana/schema's types.

# (path, with {panel type} for the first panel of that type; value; rename; what tsc says there)
TYPE_BREAKS = {
    "dashboard-field-of-a-wrong-type": ("graphTooltip", "shared", None,
                                        "Type 'string' is not assignable to type 'DashboardCursorSync | undefined'."),
    "variable-enum-value-out-of-range": ("templating/list/0/refresh", 5, None,
                                         "Type '5' is not assignable to type 'VariableRefresh | undefined'."),
    "gridpos-of-a-wrong-type": ("panels/{stat}/gridPos/x", "0", None,
                                "Type 'string' is not assignable to type 'number'."),
    "misspelt-panel-field": ("panels/{timeseries}/description", None, "descripton",
                             "Object literal may only specify known properties, and '\"descripton\"' does not exist"),
    "misspelt-row-field": ("panels/{row}/collapsed", None, "colapsed",
                           "Object literal may only specify known properties, and '\"colapsed\"' does not exist"),
    "timeseries-option-not-in-its-enum": ("panels/{timeseries}/options/legend/displayMode", "tabel", None,
                                          "Type '\"tabel\"' is not assignable to type '\"hidden\" | \"list\" | "
                                          "\"table\" | undefined'. Did you mean '\"table\"'?"),
    "misspelt-timeseries-field-config": ("panels/{timeseries}/fieldConfig/defaults/custom/lineWidth", None,
                                         "lineWidht", "'\"lineWidht\"' does not exist"),
    "stat-option-not-in-its-enum": ("panels/{stat}/options/colorMode", "colour", None,
                                    "Type '\"colour\"' is not assignable to type"),
    "misspelt-stat-option": ("panels/{stat}/options/graphMode", None, "graphmode", "'\"graphmode\"' does not exist"),
    "target-ref-id-of-a-wrong-type": ("panels/{timeseries}/targets/0/refId", 1, None,
                                      "Type 'number' is not assignable to type 'string'."),
}


def type_break(board: Dashboard, case: str) -> tuple[Dashboard, str]:
    """The copy ``TYPE_BREAKS[case]`` makes, and the path tsc should report."""
    path, value, rename, _ = TYPE_BREAKS[case]
    path = path.format(**{kind: first(board, kind) for kind in ("row", "stat", "timeseries")})
    reported = path.rsplit("/", 1)[0] + "/" + rename if rename else path
    return broken(board, path, value, rename=rename), "/" + reported


def inside_a_collapsed_row(board: Dashboard) -> tuple[Dashboard, str]:
    """Every row collapsed, and a misspelt field in the first panel inside one."""
    result = collapsed(board)
    row = next(i for i, panel in enumerate(result["panels"]) if panel["type"] == "row" and panel["panels"])
    result["panels"][row]["panels"][0]["titel"] = result["panels"][row]["panels"][0].pop("title")
    return result, f"/panels/{row}/panels/0/titel"


@pytest.fixture(scope="module")
def type_results(board: Dashboard, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """One tsc run for all: the dashboard, the ConfigMap's copy, it collapsed, and each broken copy."""
    dashboards = {
        "dashboard": board,
        "configmap": json.loads(kubernetes_objects()["ConfigMap"]["data"][DASHBOARD.name]),
        "collapsed": collapsed(board),
        "in-a-collapsed-row": inside_a_collapsed_row(board)[0],
        "unknown-panel-type": broken(board, f"panels/{first(board, 'stat')}/type", "stats"),
        "misspelt-expr": broken(board, f"panels/{first(board, 'timeseries')}/targets/0/expr", None, rename="exprr"),
        **{case: type_break(board, case)[0] for case in TYPE_BREAKS},
    }
    return type_problems(dashboards, tmp_path_factory.mktemp("tsc"))


def versions() -> str:
    return f"@grafana/schema {package_version('@grafana/schema')}, typescript {package_version('typescript')}"


@pytest.mark.parametrize("name", ["dashboard", "configmap", "collapsed"])
def test_the_dashboard_has_grafanas_types(type_results: dict[str, list[str]], name: str) -> None:
    # The ConfigMap carries the same text (test_kubernetes.py); collapsed, its panels are typed inside the rows.
    assert type_results[name] == [], versions()


@pytest.mark.parametrize("case", TYPE_BREAKS)
def test_a_copy_broken_against_the_types_is_rejected_there(board: Dashboard, type_results: dict[str, list[str]],
                                                           case: str) -> None:
    _, path = type_break(board, case)
    [problem] = type_results[case]
    assert problem.startswith(f"{path}: ") and TYPE_BREAKS[case][3] in problem, problem


def test_a_panel_inside_a_collapsed_row_is_type_checked(board: Dashboard, type_results: dict[str, list[str]]) -> None:
    [problem] = type_results["in-a-collapsed-row"]
    assert problem.startswith(inside_a_collapsed_row(board)[1] + ": Object literal may only specify known properties")


def test_a_panel_type_the_package_has_no_types_for_is_rejected(board: Dashboard,
                                                               type_results: dict[str, list[str]]) -> None:
    # Each core panel plugin has its own types; any other type fails (with its options then read as another's).
    panel = f"/panels/{first(board, 'stat')}"
    problems = type_results["unknown-panel-type"]
    assert problems[0].startswith(f"{panel}/type: Type '\"stats\"' is not assignable to type "), problems
    assert all(p.startswith(panel + "/") for p in problems), problems


def test_the_types_let_a_misspelt_query_field_through(board: Dashboard, type_results: dict[str, list[str]]) -> None:
    # The package has no Prometheus query type: targets are records past refId, datasource and hide.
    # The expression check below is what finds a query without its expr.
    assert type_results["misspelt-expr"] == []
    index = first(board, "timeseries")
    copy_ = broken(board, f"panels/{index}/targets/0/expr", None, rename="exprr")
    assert expression_problems(copy_) == [f"{at(board, index)}: its Prometheus query 'A' has no expr"]


# What the types cannot see.

Check = Callable[[Dashboard], list[str]]
CHECKS = [id_problems, layout_problems, datasource_problems, variable_problems, expression_problems]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("collapse", [False, True], ids=["as-shipped", "rows-collapsed"])
def test_the_dashboard_passes(board: Dashboard, check: Check, collapse: bool) -> None:
    assert check(collapsed(board) if collapse else board) == []


def test_the_expression_check_reads_every_query(board: Dashboard) -> None:
    # Every query of every panel (also inside collapsed rows), and each query variable's selector.
    folded = collapsed(board)
    targets = [t for _, panel in panels(folded) for t in panel.get("targets", [])]
    variables = [v for v in folded["templating"]["list"] if v["type"] == "query"]
    assert len(expressions(folded)[0]) == len(targets) + len(variables) > len(variables)


def duplicate_id(board: Dashboard) -> tuple[Check, list[str]]:
    a, b = plain_panels(board)[:2]
    board["panels"][b]["id"] = board["panels"][a]["id"]
    return id_problems, [f"id {board['panels'][a]['id']} is on {at(board, a)}, {at(board, b)}"]


def duplicate_id_in_a_collapsed_row(board: Dashboard) -> tuple[Check, list[str]]:
    board.update(collapsed(board))
    row = next(i for i, panel in enumerate(board["panels"]) if panel["type"] == "row" and panel["panels"])
    inner = board["panels"][row]["panels"][0]
    inner["id"] = board["panels"][row]["id"]
    return id_problems, [f"id {inner['id']} is on {at(board, row)}, {label(f'/panels/{row}/panels/0', inner)}"]


def panel_on_another(board: Dashboard) -> tuple[Check, list[str]]:
    a, b = plain_panels(board)[:2]
    board["panels"][b]["gridPos"] = dict(board["panels"][a]["gridPos"])
    return layout_problems, [f"{at(board, a)} and {at(board, b)} overlap"]


def panel_on_a_rows_line(board: Dashboard) -> tuple[Check, list[str]]:
    # A row takes the whole width, whatever its gridPos says: a one-high panel on its line overlaps it alone.
    row = next(i for i, panel in enumerate(board["panels"]) if panel["type"] == "row" and i > 0)
    board["panels"][row]["gridPos"].update(x=GRID_COLUMNS - 1, w=1)
    board["panels"][row - 1]["gridPos"].update(y=board["panels"][row]["gridPos"]["y"], h=1)
    return layout_problems, [f"{at(board, row - 1)} and {at(board, row)} overlap"]


def panel_past_the_last_column(board: Dashboard) -> tuple[Check, list[str]]:
    index = next(i for i in plain_panels(board) if sum(board["panels"][i]["gridPos"][k] for k in "xw") == GRID_COLUMNS)
    position = board["panels"][index]["gridPos"]
    position["w"] += 1
    x, w, y, h = (position[k] for k in "xwyh")
    return layout_problems, [f"{at(board, index)}: gridPos {x=} {w=} {y=} {h=} is not within the 24 columns"]


def panels_inside_an_expanded_row(board: Dashboard) -> tuple[Check, list[str]]:
    board.update(collapsed(board))
    row = next(i for i, panel in enumerate(board["panels"]) if panel["type"] == "row" and panel["panels"])
    board["panels"][row]["collapsed"] = False
    return layout_problems, [f"{at(board, row)} is expanded, so Grafana does not show the panels inside it"]


def datasource_breaker(field: str, value: str, problem: str) -> Callable[[Dashboard], tuple[Check, list[str]]]:
    def breaks(board: Dashboard) -> tuple[Check, list[str]]:
        index = first(board, "timeseries")
        board["panels"][index]["targets"][0]["datasource"][field] = value
        return datasource_problems, [f"/panels/{index}/targets/0/datasource: {problem}"]
    return breaks


def variable_breaker(field: str, reference: str) -> Callable[[Dashboard], tuple[Check, list[str]]]:
    def breaks(board: Dashboard) -> tuple[Check, list[str]]:
        index = first(board, "timeseries")
        target = board["panels"][index] if field == "title" else board["panels"][index]["targets"][0]
        target[field] += f" {reference}"
        path = f"/panels/{index}" + ("" if field == "title" else "/targets/0")
        return variable_problems, [f"{path}/{field}: {reference} is no variable of the dashboard nor one of Grafana's"]
    return breaks


def repeat_for_no_variable(board: Dashboard) -> tuple[Check, list[str]]:
    index = first(board, "timeseries")
    board["panels"][index]["repeat"] = "server"
    return variable_problems, [f"{at(board, index)} repeats for 'server', no variable of the dashboard"]


def query_without_expr(board: Dashboard) -> tuple[Check, list[str]]:
    index = first(board, "timeseries")
    del board["panels"][index]["targets"][0]["expr"]
    return expression_problems, [f"{at(board, index)}: its Prometheus query 'A' has no expr"]


STRUCTURAL_BREAKS: dict[str, Callable[[Dashboard], tuple[Check, list[str]]]] = {
    "duplicate-id": duplicate_id,
    "duplicate-id-in-a-collapsed-row": duplicate_id_in_a_collapsed_row,
    "panel-on-another": panel_on_another,
    "panel-on-a-rows-line": panel_on_a_rows_line,
    "panel-past-the-last-column": panel_past_the_last_column,
    "panels-inside-an-expanded-row": panels_inside_an_expanded_row,
    "datasource-uid-of-one-grafana": datasource_breaker(
        "uid", "P1809F7CD0C75ACF3", "'P1809F7CD0C75ACF3' is no data source variable of the dashboard nor a built-in "
        "data source"),
    "datasource-uid-of-a-query-variable": datasource_breaker(
        "uid", "${job}", "'${job}' is no data source variable of the dashboard nor a built-in data source"),
    "datasource-of-another-type": datasource_breaker(
        "type", "loki", "a 'loki' data source, but $datasource lists 'prometheus' ones"),
    "unknown-variable-in-expr": variable_breaker("expr", "$nosuchvar"),
    "unknown-variable-in-legend": variable_breaker("legendFormat", "${nosuchvar:csv}"),
    "unknown-variable-in-title": variable_breaker("title", "[[nosuchvar]]"),
    "unknown-builtin-variable": variable_breaker("expr", "$__rate_intervall"),
    "repeat-for-no-variable": repeat_for_no_variable,
    "query-without-expr": query_without_expr,
}


@pytest.mark.parametrize("case", STRUCTURAL_BREAKS)
def test_a_broken_copy_is_rejected_by_its_check(board: Dashboard, case: str) -> None:
    copy_ = copy.deepcopy(board)
    check, expected = STRUCTURAL_BREAKS[case](copy_)
    assert check(copy_) == expected


@pytest.mark.parametrize(("where", "expr", "message"), [
    ("panel", "sum(rate(rucio_jupyterlab_http_requests_total[$__rate_interval])", "unclosed left parenthesis"),
    ("panel", "sum by (handler (rucio_jupyterlab_http_requests_total)", 'unexpected "(" in grouping opts'),
    ("variable", 'rucio_jupyterlab_http_instrumented_routes{job=~"$job"', "unexpected end of input inside braces"),
], ids=["unclosed-parenthesis", "broken-grouping", "variable-selector-unclosed-brace"])
def test_an_expression_that_does_not_parse_is_rejected(board: Dashboard, where: str, expr: str, message: str) -> None:
    copy_ = copy.deepcopy(board)
    if where == "panel":
        path = f"/panels/{first(board, 'timeseries')}/targets/0/expr"
        copy_["panels"][first(board, "timeseries")]["targets"][0]["expr"] = expr
    else:
        index = next(i for i, v in enumerate(board["templating"]["list"]) if v["type"] == "query")
        path = f"/templating/list/{index}/query"
        copy_["templating"]["list"][index]["query"]["query"] = f"label_values({expr}, instance)"
    [problem] = expression_problems(copy_)
    assert problem.startswith(f"{path}: could not parse expression: ") and message in problem, problem
