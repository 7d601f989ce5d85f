"""The shipped deploy/ files, read for the tests (and the demo).

- ``deploy_config``: a shipped Prometheus config made runnable on loopback.
- ``rule_expressions`` / ``dashboard_expressions``: every PromQL expression
  in the rules and the Grafana dashboard, the dashboard's variables filled in
  the way Grafana would for "All".
- ``metric_names``: the series names an expression reads.
- ``promtool``: Debian's promtool, run on files or on stdin.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ..servers.jupyter_server_process import REPO

DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
SCRAPE_CONFIGS = sorted(PROMETHEUS_DIR.glob("*.yml"))
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "rucio-jupyterlab.json"
INTERVAL = "1s"

# rucio_metrics' families, and the outbound ones (exported once rucio_metrics measures calls to Rucio).
HTTP_FAMILIES = {
    "rucio_jupyterlab_http_requests_total": "counter",
    "rucio_jupyterlab_http_request_duration_seconds": "summary or histogram",
    "rucio_jupyterlab_http_requests_in_progress": "gauge",
    "rucio_jupyterlab_http_exceptions_total": "counter",
    "rucio_jupyterlab_http_instrumented_routes": "gauge",
    "rucio_jupyterlab_http_request_failures_total": "counter",
}
OUTBOUND_FAMILIES = {
    "rucio_jupyterlab_rucio_requests_total": "counter",
    "rucio_jupyterlab_rucio_request_duration_seconds": "summary or histogram",
}
# The transfer families (exported once rucio_metrics watches rucio-jupyterlab's downloads and uploads).
TRANSFER_FAMILIES = {
    "rucio_jupyterlab_transfers_started_total": "counter",
    "rucio_jupyterlab_transfers_ended_total": "counter",
    "rucio_jupyterlab_transfer_failures_total": "counter",
    "rucio_jupyterlab_transfer_failures_by_fault_total": "counter",
    "rucio_jupyterlab_transfer_bytes_total": "counter",
    "rucio_jupyterlab_transfers_in_progress": "gauge",
    "rucio_jupyterlab_transfer_duration_seconds": "summary or histogram",
}
# How long users wait for their files (exported once rucio_metrics watches make-available and the did route).
TIME_TO_DATA_FAMILIES = {
    "rucio_jupyterlab_time_to_data_seconds": "histogram",
    "rucio_jupyterlab_time_to_data_waits": "gauge",
    "rucio_jupyterlab_time_to_data_make_available_total": "counter",
    "rucio_jupyterlab_time_to_data_waits_dropped_total": "counter",
}
# The versions each server runs, one series per server.
BUILD_INFO_FAMILIES = {"rucio_metrics_build_info": "gauge"}
_SAMPLE_SUFFIXES = ("", "_sum", "_count", "_bucket")

# What Grafana puts for "All" (allValue) and for $__rate_interval at a 1 s scrape interval.
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*", "$handler": ".*"}


# libyaml's parser where PyYAML has it: the same documents, several times faster (tests read these files
# hundreds of times, some at collection in every worker).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_SAFE_LOADER)


def deploy_config(
    name: str,
    credentials_file: Path,
    static_configs: list[dict[str, Any]] | None = None,
    file_sd: Path | None = None,
) -> dict[str, Any]:
    """The shipped ``deploy/prometheus/<name>`` made runnable here.

    Only what is specific to a machine changes: scrape and rule evaluation
    every second, the rule files by absolute path, the token file, and the
    targets (``static_configs`` replace the shipped ones; ``file_sd`` replaces
    the files of ``file_sd_configs``, and stands in for ``kubernetes_sd_configs``,
    which Debian's Prometheus lacks). Job names, paths, auth and relabelling
    stay as shipped.
    """
    config = copy.deepcopy(load_yaml(PROMETHEUS_DIR / name))
    config.setdefault("global", {}).update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config.get("rule_files", [])]
    for job in config["scrape_configs"]:
        job["scrape_interval"] = INTERVAL
        job["scrape_timeout"] = INTERVAL
        if "authorization" in job:  # the Kubernetes config presents none
            job["authorization"]["credentials_file"] = str(credentials_file)
        if static_configs is not None and "static_configs" in job:
            job["static_configs"] = static_configs
        if file_sd is not None:
            for sd in job.get("file_sd_configs", []):
                sd["files"] = [str(file_sd)]
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["file_sd_configs"] = [{"files": [str(file_sd)]}]
    return config


# A shipped config's commented top-level alerting block: "# alerting:" and its indented lines.
_COMMENTED_ALERTING = re.compile(r"^# (alerting:\n)((?:#   .*\n)+)", re.M)


def uncomment_alerting(text: str) -> str:
    """A shipped config's text with its commented ``alerting:`` block uncommented, as the docs say to."""
    def uncommented(match: re.Match[str]) -> str:
        return match.group(1) + re.sub(r"^# ", "", match.group(2), flags=re.M)

    text, found = _COMMENTED_ALERTING.subn(uncommented, text)
    assert found == 1, "no commented alerting: block"
    return text


def rules() -> list[dict[str, Any]]:
    """Every rule of the shipped rule files."""
    return [rule for path in RULE_FILES for group in load_yaml(path)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def rule_expressions() -> list[tuple[str, str]]:
    """``(record or alert name, expr)`` of every shipped rule."""
    return [(rule.get("record") or rule["alert"], rule["expr"]) for rule in rules()]


def dashboard() -> Any:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel with queries, also those inside collapsed rows."""
    panels = []
    for panel in dashboard()["panels"]:
        panels.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return panels


def fill_variables(expr: str) -> str:
    for name in sorted(DASHBOARD_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, DASHBOARD_VARIABLES[name])
    assert "$" not in expr, f"a dashboard variable is not filled in: {expr}"
    return expr


def dashboard_expressions() -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every dashboard query, variables filled in."""
    return [(panel["title"], fill_variables(target["expr"])) for panel in dashboard_panels()
            for target in panel["targets"]]


def dashboard_variable_selectors() -> dict[str, str]:
    """``{variable: series selector}`` of the ``label_values(<selector>, label)`` variables."""
    selectors = {}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable["query"]["query"])
            assert match, variable["query"]
            assert match.group(2) == variable["name"], "a variable lists its own label"
            selectors[variable["name"]] = fill_variables(match.group(1))
    return selectors


_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
             "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names ``expr`` reads (function names, keywords and labels left out).

    >>> sorted(metric_names('sum by (handler) (rate(a_total{x="y"}[5m])) / on (job) b:c > 0.5'))
    ['a_total', 'b:c']
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, is_call = match.group(1), match.group(2)
        if not is_call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def our_series_names() -> set[str]:
    """The names the rules and the dashboard may read: our families' samples and our recording rules."""
    families = {**HTTP_FAMILIES, **OUTBOUND_FAMILIES, **TRANSFER_FAMILIES, **TIME_TO_DATA_FAMILIES,
                **BUILD_INFO_FAMILIES}
    return {family + suffix for family in families for suffix in _SAMPLE_SUFFIXES} | recorded_names()


# promtool's rule unit tests evaluate every rule over days of series at a 1-minute interval: the SLO
# file alone takes about 35 s on a busy 2-core machine, and more beside the suite's other worker.
PROMTOOL_TEST_SECONDS = 300


# Go's collector at a quarter of its usual pace (GOGC=400): the unit tests allocate much and keep little,
# and spend a third less CPU so (measured on the SLO file: 55 s of CPU, was 78; under 250 MB).
PROMTOOL_ENV = {**os.environ, "GOGC": "400"}


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    timeout = PROMTOOL_TEST_SECONDS if args[:1] == ("test",) else 60
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, check=False, env=PROMTOOL_ENV)


OUR_PREFIXES = ("rucio_jupyterlab_http_", "rucio_jupyterlab_rucio_", "rucio_jupyterlab_transfer",
                "rucio_jupyterlab_time_to_data_", "rucio_metrics_")


def our_families_only(exposition: str) -> str:
    """rucio_metrics' families (inbound, outbound, transfers, build info) of a /metrics response, with HELP and TYPE.

    jupyter_server's own families are left out: promtool already flags one of
    them (``terminal_currently_running_total``, a gauge named like a counter).
    """
    kept = []
    for line in exposition.splitlines():
        name = line.split()[2] if line.startswith(("# HELP ", "# TYPE ")) else line
        if name.startswith(OUR_PREFIXES):
            kept.append(line)
    return "\n".join(kept) + "\n"


KUBERNETES_DIR = DEPLOY / "kubernetes"
KUSTOMIZATION = KUBERNETES_DIR / "kustomization.yaml"
Z2JH_VALUES = KUBERNETES_DIR / "z2jh-values.yaml"
# Applied on its own, and only where z2jh's singleuser NetworkPolicy is off.
SINGLEUSER_POLICY = KUBERNETES_DIR / "singleuser-ingress-networkpolicy.yaml"


def kubernetes_objects() -> dict[str, Any]:
    """``{kind: object}`` of the objects ``kubectl apply -k deploy/kubernetes/`` applies (one of each kind)."""
    objects = {}
    for name in load_yaml(KUSTOMIZATION)["resources"]:
        for obj in yaml.safe_load_all((KUBERNETES_DIR / name).read_text()):
            assert obj["kind"] not in objects, f"a second {obj['kind']} in {name}"
            objects[obj["kind"]] = obj
    return objects


def podmonitor_scrape_config(podmonitor: dict[str, Any], file_sd: Path) -> dict[str, Any]:
    """A Prometheus config scraping with the PodMonitor's endpoint: its port's targets and relabelings.

    The Operator builds the same from a PodMonitor (plus its own selection
    rules and labels first); here the targets come from a file, as for
    ``deploy_config``. The limits are the PodMonitor's own.
    """
    [endpoint] = podmonitor["spec"]["podMetricsEndpoints"]
    assert "authorization" not in endpoint and "basicAuth" not in endpoint, "the pods are scraped with no credential"
    snake = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    limits = {"sampleLimit": "sample_limit", "labelLimit": "label_limit",
              "labelNameLengthLimit": "label_name_length_limit",
              "labelValueLengthLimit": "label_value_length_limit", "bodySizeLimit": "body_size_limit"}
    return {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "scrape_configs": [{
            "job_name": podmonitor["metadata"]["name"],
            "scrape_interval": INTERVAL,
            "scrape_timeout": INTERVAL,
            "file_sd_configs": [{"files": [str(file_sd)]}],
            "relabel_configs": [{snake.get(k, k): v for k, v in r.items()} for r in endpoint["relabelings"]],
            "metric_relabel_configs": [{snake.get(k, k): v for k, v in r.items()}
                                       for r in endpoint["metricRelabelings"]],
            **{limits[k]: v for k, v in podmonitor["spec"].items() if k in limits},
        }],
    }


# The port the shipped Kubernetes relabelling scrapes each pod's metrics listener at.
POD_LISTENER_PORT = 9101


def kubernetes_pod_target(pod_ip: str, user: str, server_name: str = "", phase: str = "Running",
                          port_name: str = "notebook-port") -> dict[str, Any]:
    """A file-SD target with the meta labels Prometheus' pod discovery gives a KubeSpawner pod at ``pod_ip``."""
    labels = {
        "__meta_kubernetes_namespace": "jhub",
        "__meta_kubernetes_pod_name": f"jupyter-{user}" + (f"--{server_name}" if server_name else ""),
        "__meta_kubernetes_pod_ip": pod_ip,
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_label_component": "singleuser-server",
        "__meta_kubernetes_pod_container_port_name": port_name,
        "__meta_kubernetes_pod_annotation_hub_jupyter_org_username": user,
    }
    if server_name:
        labels["__meta_kubernetes_pod_annotation_hub_jupyter_org_servername"] = server_name
    # Pod discovery's address is the container port's; the relabelling replaces it with the listener's.
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return {"targets": [f"{host}:8888"], "labels": labels}


def pod_discovery_config(shipped: str, pods: list[dict[str, Any]], folder: Path, listener_port: int) -> dict[str, Any]:
    """The shipped z2jh scrape config or PodMonitor, pod discovery replaced by a file holding ``pods``.

    The one other change: the listener's port, ``POD_LISTENER_PORT`` in every pod of a cluster, is
    ``listener_port`` here, where the test's pods share one machine.
    """
    pods_file = folder / "pods.json"
    pods_file.write_text(json.dumps(pods))
    if shipped == "podmonitor.yaml":
        config = podmonitor_scrape_config(kubernetes_objects()["PodMonitor"], pods_file)
    else:
        config = deploy_config(shipped, folder / "no-credential", file_sd=pods_file)
    [job] = config["scrape_configs"]
    assert "authorization" not in job, "the pods are scraped with no credential"
    listener = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
    assert [r["replacement"].rsplit(":", 1)[-1] for r in listener] == [str(POD_LISTENER_PORT)] * 2, listener
    for rule in listener:
        rule["replacement"] = rule["replacement"].replace(f":{POD_LISTENER_PORT}", f":{listener_port}")
    return config
