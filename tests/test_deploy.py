"""The shipped deploy/ files on their own: promtool checks, rule unit tests, dashboard content.

The live side (a real Prometheus running these files against real servers)
is in test_prometheus.py and test_fleet.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import rucio_metrics
from rucio_metrics.transfer_results import USER_REASONS, rucio_exception_names

from .servers.jupyter_server_process import REPO
from .support.broken_copy import broken
from .support.deploy_files import (
    DASHBOARD,
    HTTP_FAMILIES,
    OUR_PREFIXES,
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TESTS,
    SCRAPE_CONFIGS,
    dashboard,
    dashboard_expressions,
    dashboard_panels,
    deploy_config,
    load_yaml,
    metric_names,
    our_series_names,
    promtool,
    recorded_names,
    rule_expressions,
    rules,
    uncomment_alerting,
)
from .support.markdown_links import anchors

# Debian's Prometheus is built without Kubernetes discovery (removed by Debian
# since 1.5 for its client library's dependencies), so its promtool rejects
# the field itself. Everything else in that file is checked with it.
KUBERNETES_SD_MISSING = "field kubernetes_sd_configs not found in type config.ScrapeConfig"


def config_ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_the_deploy_folder_has_what_the_readme_lists() -> None:
    assert config_ids(SCRAPE_CONFIGS) == [
        "jupyter-server.yml", "jupyterhub-fleet-remote-write.yml", "jupyterhub-fleet-shard.yml", "jupyterhub-fleet.yml",
        "zero-to-jupyterhub.yml",
    ]
    assert config_ids(RULE_FILES) == ["rucio-jupyterlab-alerts.yml", "rucio-jupyterlab-recording.yml"]
    assert config_ids(RULE_TESTS) == ["rucio-jupyterlab-rules-test.yml", "rucio-jupyterlab-slo-test.yml"]


@pytest.mark.parametrize("config", SCRAPE_CONFIGS, ids=config_ids(SCRAPE_CONFIGS))
def test_promtool_check_config_syntax_of_the_shipped_file(config: Path) -> None:
    result = promtool("check", "config", "--syntax-only", config.name, cwd=PROMETHEUS_DIR)
    output = result.stdout + result.stderr
    if "kubernetes_sd_configs" in config.read_text() and KUBERNETES_SD_MISSING in output:
        return  # Debian's build; see test_promtool_check_config_in_full for the rest of the file
    assert result.returncode == 0, output
    assert f"SUCCESS: {config.name} is valid prometheus config file syntax" in output


@pytest.mark.parametrize("config", SCRAPE_CONFIGS, ids=config_ids(SCRAPE_CONFIGS))
def test_promtool_check_config_in_full(config: Path, tmp_path: Path) -> None:
    # Full check: also the rule files it names and the token file. In a copy of
    # deploy/prometheus/, so the rule files resolve relative to the config as
    # shipped; only the token and targets paths change (and a Kubernetes
    # discovery becomes a file discovery).
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    token = tmp_path / "token"
    token.write_text("a-token")
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    runnable = deploy_config(config.name, token, file_sd=targets)
    if "rule_files" not in load_yaml(config):  # a scraping shard: an agent, which has no rules
        runnable.pop("rule_files")
        runnable["global"].pop("evaluation_interval")
        (copy / config.name).write_text(yaml.safe_dump(runnable))
        result = promtool("check", "config", "--agent", config.name, cwd=copy)
        assert result.returncode == 0, result.stdout + result.stderr
        return
    runnable["rule_files"] = load_yaml(config)["rule_files"]
    assert all(not Path(f).is_absolute() for f in runnable["rule_files"])
    (copy / config.name).write_text(yaml.safe_dump(runnable))
    result = promtool("check", "config", config.name, cwd=copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout
    for rule_file in RULE_FILES:
        rule_count = sum(len(group["rules"]) for group in load_yaml(rule_file)["groups"])
        assert f"Checking rules/{rule_file.name}\n  SUCCESS: {rule_count} rules found" in result.stdout


CONFIGS_WITH_RULES = [c for c in SCRAPE_CONFIGS if "rule_files" in load_yaml(c)]


@pytest.mark.parametrize("config", CONFIGS_WITH_RULES, ids=config_ids(CONFIGS_WITH_RULES))
def test_a_config_with_alerts_ships_an_alerting_block_to_uncomment(config: Path, tmp_path: Path) -> None:
    assert "alerting" not in load_yaml(config)  # commented out: no Alertmanager runs before the operator starts one
    text = uncomment_alerting(config.read_text())
    [alertmanager] = yaml.safe_load(text)["alerting"]["alertmanagers"]
    [target] = alertmanager["static_configs"][0]["targets"]
    assert target.endswith(":9093")
    if "kubernetes_sd_configs" not in text:
        assert target == "127.0.0.1:9093"
    # Prometheus takes it; zero-to-jupyterhub.yml's discovery swapped for a file, as Debian's promtool needs.
    runnable = yaml.safe_load(text)
    for job in runnable["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["file_sd_configs"] = [{"files": ["targets.json"]}]
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    (copy / config.name).write_text(yaml.safe_dump(runnable))
    result = promtool("check", "config", "--syntax-only", config.name, cwd=copy)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *[str(p) for p in RULE_FILES])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout  # alerts
    assert "SUCCESS: 79 rules found" in result.stdout  # recording


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=config_ids(RULE_TESTS))
def test_promtool_test_rules(test_file: Path) -> None:
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rule_tests_cover_every_rule() -> None:
    tested_parts = []
    for test_file in RULE_TESTS:
        for case in load_yaml(test_file)["tests"]:
            tested_parts += [t["expr"] for t in case.get("promql_expr_test", [])]
            tested_parts += [t["alertname"] for t in case.get("alert_rule_test", [])]
    tested = " ".join(tested_parts)
    untested = [
        name for name, _ in rule_expressions() if not re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", tested)
    ]
    assert untested == []


def _window(operations: str) -> str:
    """The window a recorded series' operations end with ("5m" of "ratio_rate5m"), "" for a plain sum."""
    found = re.search(r"(\d+[smhdwy])$", operations)
    return found.group(1) if found else ""


def test_recording_rule_names_say_what_they_aggregate() -> None:
    # Prometheus' convention level:metric:operations, the level being the labels
    # the result keeps: the "by" labels of its sum, or, for a rule that only
    # combines recorded series, theirs.
    recorded = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}
    for name, expr in recorded.items():
        level, metric, operations = name.split(":")
        if re.fullmatch(r"vector\([\d.]+\)", expr.strip()):
            # A constant of the objectives: no labels to keep.
            assert (level, operations in ("objective", "min_rate")) == ("slo", True), name
            continue
        if expr.strip().startswith("label_replace(vector(1),"):
            # A constant carrying a label for the alerts' annotations, as kube-state-metrics' *_info.
            assert (level, operations) == ("runbook", "info"), name
            continue
        assert metric.startswith(OUR_PREFIXES), name
        assert not metric.endswith("_total"), name
        inputs = [read for read in metric_names(expr) if read in recorded and not read.startswith("slo:")]
        by = re.search(r"sum by \(([^)]*)\)", expr)
        if by:
            assert level == "_".join(label for label in re.split(r",\s*", by.group(1)) if label != "le"), name
        else:
            assert inputs and {read.split(":")[0] for read in inputs} == {level}, name
        # The window it looks at (its own range, or that of the recorded series
        # it combines), or the plain sum of a gauge.
        windows = re.findall(r"\[(\w+)\]", expr) or [w for read in inputs if (w := _window(read.split(":")[2]))]
        offsets = [int(m) for m in re.findall(r"\boffset (\d+)m\b", expr)]
        if offsets:
            # A window made of 5-minute windows, the last at its longest offset: 55m + 5m = "1h".
            assert windows == ["5m"] * len(windows), name
            minutes = max(offsets) + 5
            windows = [f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"]
        assert operations.endswith(tuple(windows)) if windows else operations == "sum", name


def test_each_raw_family_is_read_by_one_rule() -> None:
    # What the rules cost grows with the servers' raw series: each is read once
    # per evaluation, and everything else reads recorded series.
    # up is one series per server, not per route: two alerts read it.
    readers: dict[str, list[str]] = {}
    for name, expr in rule_expressions():
        for read in metric_names(expr) - recorded_names() - {"up"}:
            readers.setdefault(read, []).append(name)
    assert {read: len(names) for read, names in readers.items() if len(names) > 1} == {}, readers


def test_rules_read_only_our_series_and_up() -> None:
    for name, expr in rule_expressions():
        assert metric_names(expr) <= our_series_names() | {"up"}, name


ALERTS = [
    "RucioJupyterLabHighErrorRatio", "RucioJupyterLabRoutesNotInstrumented", "RucioJupyterLabScrapesFailing",
    "RucioJupyterLabSlowRequests", "RucioJupyterLabRucioCallsFailing", "RucioJupyterLabTransfersFailing",
    "RucioJupyterLabRoutesErrorBudgetBurn", "RucioJupyterLabRoutesErrorBudgetSlowBurn",
    "RucioJupyterLabRucioErrorBudgetBurn", "RucioJupyterLabRucioErrorBudgetSlowBurn",
    "RucioJupyterLabReplicationStuck", "RucioJupyterLabTimeToDataBudgetBurn",
    "RucioJupyterLabTimeToDataBudgetSlowBurn",
]


def test_alerts_have_a_severity_and_text() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert [a["alert"] for a in alerts] == ALERTS
    for alert in alerts:
        # The fast burns page (critical); everything else is a ticket for the hub's operators.
        fast_burn = alert["alert"].endswith("BudgetBurn")
        assert alert["labels"]["severity"] == ("critical" if fast_burn else "warning")
        # The pages have none, as in the SRE workbook: their short window holds back a burst that is over.
        assert ("for" in alert) != fast_burn, alert["alert"]
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}


def test_burn_rate_alerts_use_the_workbook_pairs_and_the_one_objective() -> None:
    recording = (PROMETHEUS_DIR / "rules" / "rucio-jupyterlab-recording.yml").read_text()
    # Each objective is a number in one place; the burn rates divide by it.
    assert len(re.findall(r"vector\(0\.99\d*\)", recording)) == 2
    for alert in (rule for rule in rules() if "ErrorBudget" in rule.get("alert", "")):
        pairs = re.findall(r":burnrate(\w+) > ([\d.]+)\s+and \S+:burnrate(\w+) > ([\d.]+)", alert["expr"])
        found = {(long, short, float(threshold)) for long, threshold, short, again in pairs if threshold == again}
        fast = {("1h", "5m", 14.4), ("6h", "30m", 6.0)}
        slow = {("1d", "2h", 3.0), ("3d", "6h", 1.0)}
        assert found == (slow if "SlowBurn" in alert["alert"] else fast), alert["alert"]
        # Every pair is held to the floor over its long window, by the hub's requests (or calls)
        # per second over that window: a recorded series that counts missing history as no traffic.
        kind = "http" if "Routes" in alert["alert"] else "rucio"
        floors = re.findall(rf"job:rucio_jupyterlab_{kind}_requests:rate(\w+)\s+"
                            r">= on \(\) group_left \(\) slo:rucio_jupyterlab_requests:min_rate", alert["expr"])
        assert sorted(floors) == sorted(long for long, _, _ in found), alert["alert"]
        assert {f"job:rucio_jupyterlab_{kind}_requests:rate{long}" for long in floors} <= recorded_names()
        assert {f"job:rucio_jupyterlab_{kind}_request_errors:burnrate{w}" for pair in found for w in pair[:2]} <= (
            metric_names(alert["expr"])), alert["alert"]


def test_alert_expressions_read_recorded_series_without_ranges() -> None:
    # Every window is in a recording rule, evaluated once per hub; an alert compares.
    for alert in (rule for rule in rules() if "alert" in rule):
        assert "[" not in alert["expr"], alert["alert"]


# -- the alerts' conventions (the monitoring mixins'), each check shown to reject a broken copy ---------------

SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_RULE = "runbook:rucio_jupyterlab_alerts:info"
# Every runbook_url: the base the one runbook rule records, then the alert's own section.
RUNBOOK_URL = '{{ with query "' + RUNBOOK_RULE + '" }}{{ . | first | label "base_url" }}{{ end }}#'
USERS_MISTAKES = re.compile(r":\w*(user_mistakes|transfer_user_failures):")


def shipped_rules() -> dict[str, Any]:
    """The groups of every shipped rule file, as one rule file."""
    return {"groups": [group for path in RULE_FILES for group in load_yaml(path)["groups"]]}


def rule_path(document: dict[str, Any], name: str) -> str:
    """``groups/<i>/rules/<j>`` of the rule that records or alerts as ``name``."""
    for i, group in enumerate(document["groups"]):
        for j, rule in enumerate(group["rules"]):
            if name in (rule.get("record"), rule.get("alert")):
                return f"groups/{i}/rules/{j}"
    raise KeyError(name)


def convention_problems(document: dict[str, Any]) -> list[str]:
    """What in ``document``'s rules breaks the conventions, one line each; empty when nothing does."""
    problems = []
    for group in document["groups"]:
        if not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", group["name"]) or len(group["name"]) > 32:
            problems.append(f"group {group['name']}: not snake_case of at most 32 characters")
        for rule in (rule for rule in group["rules"] if "alert" in rule):
            alert, labels, annotations = rule["alert"], rule.get("labels", {}), rule.get("annotations", {})
            if not re.fullmatch(r"RucioJupyterLab([A-Z][a-z0-9]+)+", alert) or len(alert) > 40:
                problems.append(f"{alert}: name not CamelCase RucioJupyterLab... of at most 40 characters")
            if labels.get("severity") not in SEVERITIES:
                problems.append(f"{alert}: severity {labels.get('severity')!r}")
            if "{{" in annotations.get("summary", "{{"):
                problems.append(f"{alert}: summary missing or templated")
            if "{{" not in annotations.get("description", ""):
                problems.append(f"{alert}: description missing or without the values")
            if annotations.get("runbook_url") != RUNBOOK_URL + alert.lower():
                problems.append(f"{alert}: runbook_url not {RUNBOOK_RULE}'s base and #{alert.lower()}")
            # Users' mistakes never page: no alert reads their series.
            if any(USERS_MISTAKES.search(name) for name in metric_names(rule["expr"])):
                problems.append(f"{alert}: reads users' mistakes")
    setting = [rule.get("record") or rule.get("alert") for group in document["groups"] for rule in group["rules"]
               if "base_url" in rule["expr"]]
    if setting != [RUNBOOK_RULE]:
        problems.append(f"the runbook base is set by {setting}, not by {RUNBOOK_RULE} alone")
    return problems


def test_the_shipped_alerts_follow_the_conventions() -> None:
    assert convention_problems(shipped_rules()) == []


# (rule, field, value, rename, what the check says): each breaks one convention in a copy of the shipped rules.
BROKEN_CONVENTIONS = {
    "a severity outside the three": ("RucioJupyterLabSlowRequests", "labels/severity", "page", None, "severity"),
    "a templated summary": ("RucioJupyterLabSlowRequests", "annotations/summary", "{{ $labels.handler }} is slow",
                            None, "summary"),
    "a static description": ("RucioJupyterLabSlowRequests", "annotations/description", "A route is slow.", None,
                             "description"),
    "no runbook_url": ("RucioJupyterLabSlowRequests", "annotations/runbook_url", None, "runbook", "runbook_url"),
    "another alert's section": ("RucioJupyterLabSlowRequests", "annotations/runbook_url",
                                RUNBOOK_URL + "ruciojupyterlabhigherrorratio", None, "runbook_url"),
    "a base of its own": ("RucioJupyterLabSlowRequests", "annotations/runbook_url",
                          "https://github.com/rucio/rucio-metrics/blob/v0.1.0/docs/runbook.md"
                          "#ruciojupyterlabslowrequests", None, "runbook_url"),
    "a name not CamelCase": ("RucioJupyterLabSlowRequests", "alert", "RucioJupyterLab_slow_requests", None, "name"),
    "a name without the prefix": ("RucioJupyterLabSlowRequests", "alert", "JupyterLabSlowRequests", None, "name"),
    "a name over 40 characters": ("RucioJupyterLabRucioErrorBudgetSlowBurn", "alert",
                                  "RucioJupyterLabRucioCallsErrorBudgetSlowBurn", None, "name"),
    "a group name not snake_case": ("", "groups/0/name", "RucioJupyterLabHttp", None, "group"),
    "a group name over 32 characters": ("", "groups/0/name", "rucio_jupyterlab_http_requests_by_route", None,
                                        "group"),
    "an alert on users' mistakes": ("RucioJupyterLabHighErrorRatio", "expr",
                                    "job_handler:rucio_jupyterlab_http_user_mistakes:rate5m > 1", None,
                                    "users' mistakes"),
    "an alert on transfers failed for the user's reasons": (
        "RucioJupyterLabTransfersFailing", "expr",
        "job_rucio_instance_direction:rucio_jupyterlab_transfer_user_failures:increase1h > 3", None,
        "users' mistakes"),
    "the runbook base set twice": ("slo:rucio_jupyterlab_requests:min_rate", "expr",
                                   'label_replace(vector(0.01), "base_url", "https://example.org/runbook", "", "")',
                                   None, "runbook base"),
    "the runbook base set nowhere": (RUNBOOK_RULE, "expr", "vector(1)", None, "runbook base"),
}


@pytest.mark.parametrize("case", list(BROKEN_CONVENTIONS))
def test_the_convention_check_rejects_a_broken_copy(case: str) -> None:
    name, field, value, rename, said = BROKEN_CONVENTIONS[case]
    document = shipped_rules()
    path = f"{rule_path(document, name)}/{field}" if name else field
    problems = convention_problems(broken(document, path, value, rename=rename))
    assert any(said in problem for problem in problems), problems


def test_the_rules_leave_whose_fault_a_transfer_failure_is_to_rucio_metrics() -> None:
    # rucio_metrics counts failed transfers by fault itself (transfer_results.USER_REASONS, at zero from the
    # start): no rule names reasons, so the rules and the code cannot disagree on them.
    for name, expr in rule_expressions():
        assert not re.search(r"\breason\s*[=!]~", expr), name
    assert USER_REASONS <= rucio_exception_names(), "each is one of Rucio's client exceptions"


def test_the_runbook_base_is_this_releases_runbook() -> None:
    [rule] = [rule for rule in rules() if rule.get("record") == RUNBOOK_RULE]
    base = re.fullmatch(r'label_replace\(vector\(1\), "base_url",\s*"([^"]+)", "", ""\)', rule["expr"].strip())
    assert base, rule["expr"]
    assert base.group(1) == f"https://github.com/rucio/rucio-metrics/blob/v{rucio_metrics.__version__}/docs/runbook.md"


def test_every_runbook_url_anchor_is_a_heading_of_the_runbook() -> None:
    headings = anchors((REPO / "docs" / "runbook.md").read_text())
    sections = {rule["alert"]: rule["annotations"]["runbook_url"].rsplit("#", 1)[1] for rule in rules()
                if "alert" in rule}
    assert {alert: section for alert, section in sections.items() if section not in headings} == {}


# A Kubernetes equality-based selector: key=value[,key!=value...]
_SELECTOR = r"[\w./-]+(!?=|==)[\w.-]*(,[\w./-]+(!?=|==)[\w.-]*)*"


def kubernetes_sd_problems(sd: dict[str, Any]) -> list[str]:
    """What upstream Prometheus' kubernetes_sd_config validation would reject (discovery/kubernetes)."""
    allowed_keys = {"api_server", "role", "kubeconfig_file", "namespaces", "selectors", "attach_metadata",
                    "basic_auth", "authorization", "oauth2", "tls_config", "proxy_url", "follow_redirects"}
    allowed_selectors = {"pod": {"pod"}, "service": {"service"}, "node": {"node"}, "ingress": {"ingress"},
                         "endpoints": {"pod", "service", "endpoints"},
                         "endpointslice": {"pod", "service", "endpointslice"}}
    problems = [f"unknown key {key}" for key in sd if key not in allowed_keys]
    role = sd.get("role")
    if role not in allowed_selectors:
        problems.append(f"role {role!r}")
        return problems
    namespace_keys = {"names", "own_namespace"}
    problems += [f"unknown namespaces key {key}" for key in sd.get("namespaces", {}) if key not in namespace_keys]
    seen = set()
    for selector in sd.get("selectors", []):
        if selector["role"] in seen:
            problems.append(f"duplicated selector role {selector['role']}")
        seen.add(selector["role"])
        if selector["role"] not in allowed_selectors[role]:
            problems.append(f"{role} role supports only {allowed_selectors[role]} selectors")
        for kind in ("label", "field"):
            if kind in selector and not re.fullmatch(_SELECTOR, selector[kind]):
                problems.append(f"{kind} selector {selector[kind]!r}")
    return problems


def test_zero_to_jupyterhub_pod_discovery_is_what_upstream_accepts() -> None:
    [job] = load_yaml(PROMETHEUS_DIR / "zero-to-jupyterhub.yml")["scrape_configs"]
    [sd] = job["kubernetes_sd_configs"]
    assert kubernetes_sd_problems(sd) == []
    assert sd["role"] == "pod" and sd["selectors"] == [{"role": "pod", "label": "component=singleuser-server"}]
    # The validator itself rejects what upstream rejects.
    assert kubernetes_sd_problems({"role": "pod", "selectors": [{"role": "service", "label": "a=b"}]})
    assert kubernetes_sd_problems({"role": "pods"})
    # The meta labels the relabelling reads are the ones pod discovery sets for KubeSpawner's pods.
    meta = {label for rule in job["relabel_configs"] for label in rule.get("source_labels", [])
            if label.startswith("__meta_")}
    assert meta == {
        "__meta_kubernetes_pod_phase", "__meta_kubernetes_pod_container_port_name", "__meta_kubernetes_pod_ip",
        "__meta_kubernetes_pod_annotation_hub_jupyter_org_username",
        "__meta_kubernetes_pod_annotation_hub_jupyter_org_servername",
        "__meta_kubernetes_namespace", "__meta_kubernetes_pod_name",
    }


def test_dashboard_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "handler"]
    for name in ("job", "instance", "handler"):
        assert variables[name]["multi"] and variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    assert all('instance=~"$instance"' in e and 'handler=~"$handler"' in e
               for p in dashboard_panels() for e in (t["expr"] for t in p["targets"])
               if "rucio_jupyterlab_http_requests_total" in e)


def test_dashboard_reads_only_our_metrics_and_rules() -> None:
    used: set[str] = set()
    for title, expr in dashboard_expressions():
        names = metric_names(expr)
        assert names, title
        assert names <= our_series_names(), f"{title}: {names - our_series_names()}"
        used |= names
    # Every inbound family and every recording rule is on the dashboard, but
    # for those only other rules read (the parts of a ratio, the objectives).
    for family in HTTP_FAMILIES:
        assert any(name.startswith(family) for name in used), family
    read_by_rules = {name for _, expr in rule_expressions() for name in metric_names(expr)}
    read_by_annotations = {name for rule in rules() for text in rule.get("annotations", {}).values()
                           for name in re.findall(r'query "([\w:]+)"', text)}
    assert recorded_names() - read_by_rules - read_by_annotations <= used


def test_dashboard_panels_are_well_formed() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = [p["title"] for p in dashboard_panels()]
    for needed in ("Request rate by route", "Errors by status", "Mean latency by route",
                   "p95 latency by route (histogram only)", "Exceptions by class", "Requests in progress by route"):
        assert needed in titles
    for panel in dashboard_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert [t["refId"] for t in panel["targets"]] == [chr(ord("A") + i) for i in range(len(panel["targets"]))]


def page_section(page: str, heading: str) -> str:
    """The part of ``docs/<page>`` under ``heading``, up to the next heading of its level or above."""
    text = (REPO / "docs" / page).read_text()
    level = heading.split(" ", 1)[0]
    return text.split(heading + "\n", 1)[1].split("\n" + level + " ", 1)[0]


def test_the_docs_list_every_deploy_file_rule_and_alert() -> None:
    files = page_section("operations.md", "## What is in deploy/")
    for path in [*SCRAPE_CONFIGS, *RULE_FILES, *RULE_TESTS, DASHBOARD]:
        assert f"`{path.relative_to(REPO)}`" in files, path
    tables = (REPO / "docs" / "recording-rules.md").read_text() + page_section("alerts.md", "## Alerts")
    rule_rows = re.findall(r"^\| `([\w:]+)` \|", tables, re.M)
    assert sorted(rule_rows) == sorted(name for name, _ in rule_expressions())
    fleet_part = page_section("jupyterhub.md", "## 5. The targets: the fleet helper")
    assert "python3 -m rucio_metrics.fleet" in fleet_part
    assert set(re.findall(r"(?<![-\w])(--[a-z][a-z-]*)", fleet_part)) <= FLEET_FLAGS


FLEET_FLAGS = {"--hub-url", "--token-file", "--output", "--address", "--interval", "--timeout"}


def test_fleet_helper_has_the_flags_the_readme_shows() -> None:
    result = subprocess.run([sys.executable, "-m", "rucio_metrics.fleet", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=60, check=True)
    assert set(re.findall(r"(--[a-z-]+)", result.stdout)) - {"--help"} == FLEET_FLAGS
