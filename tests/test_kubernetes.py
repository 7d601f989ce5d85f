"""deploy/kubernetes/: the objects an operator applies next to kube-prometheus-stack and Zero to JupyterHub.

No cluster runs here, so every object is checked against its real schema
(tests/kubernetes_schemas.py), the generated files against their one source
each, and the files against each other. The PodMonitor's scrape runs in a real
Prometheus in test_prometheus.py.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .deploy_files import (
    DASHBOARD,
    KUBERNETES_DIR,
    KUSTOMIZATION,
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TESTS,
    Z2JH_VALUES,
    kubernetes_objects,
    load_yaml,
    podmonitor_scrape_config,
    promtool,
)
from .jupyter_server_process import REPO
from .kubernetes_schemas import KUBERNETES_VERSION, operator_models_version, problems

GENERATOR = REPO / "scripts" / "kubernetes_manifests.py"
GENERATED = ["grafana-dashboard.yaml", "podmonitor.yaml", "prometheusrule.yaml"]
OPERATIONS = (REPO / "docs" / "operations.md").read_text()


@pytest.fixture(scope="module")
def objects() -> dict[str, Any]:
    return kubernetes_objects()


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GENERATOR), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_folder_holds_the_objects_the_kustomization_applies_and_the_helm_values() -> None:
    resources = load_yaml(KUSTOMIZATION)["resources"]
    assert sorted(p.name for p in KUBERNETES_DIR.iterdir()) == sorted(
        [*resources, KUSTOMIZATION.name, Z2JH_VALUES.name])
    assert sorted(kubernetes_objects()) == ["ConfigMap", "NetworkPolicy", "PodMonitor", "PrometheusRule", "Secret"]
    assert set(GENERATED) <= set(resources)


# Schemas.

def test_every_object_is_valid_against_its_schema(objects: dict[str, Any]) -> None:
    found = dict(zip(objects, problems(list(objects.values()))))
    assert found == {kind: [] for kind in objects}, (KUBERNETES_VERSION, operator_models_version())


def broken(obj: dict[str, Any], path: str, value: Any, *, rename: str | None = None) -> dict[str, Any]:
    """A copy of ``obj`` with the field at ``path`` (slashes; digits index lists) set to ``value`` or renamed."""
    result = copy.deepcopy(obj)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
    node = result
    for part in parents:
        node = node[part]
    if rename is not None:
        node[rename] = node.pop(last)
    else:
        node[last] = value
    return result


BROKEN = {
    # kind: [(path, value, rename, what the validator says)]
    "PodMonitor": [
        ("spec/podMetricsEndpoints/0/relabelings/0/action", "keeep", None, "must be equal to one of the allowed"),
        ("spec/podMetricsEndpoints/0/relabelings/0/sourceLabels", "__meta_kubernetes_pod_phase", None,
         "must be array"),
        ("spec/podMetricsEndpoints/0/relabelings/0/sourceLabels", None, "sourcelabels", "not a field"),
        ("spec/podMetricsEndpoints/0/authorization/credentials", None, "credential", "not a field"),
        ("spec/podMetricsEndpoints/0/interval", "30 seconds", None, "must match pattern"),
    ],
    "PrometheusRule": [
        ("spec/groups/0/rules/0/for", "ten minutes", None, "must match pattern"),
        ("spec/groups/0/rules/0/labels/severity", 3, None, "must be string"),
        ("spec/groups/0/rules", None, "rule", "not a field"),
    ],
    "NetworkPolicy": [
        ("spec/ingress/0/ports/0/port", ["notebook-port"], None, "is not valid under any of the given schemas"),
        ("spec/ingress", None, "ingres", "Additional properties are not allowed"),
    ],
    "ConfigMap": [("data/rucio-jupyterlab.json", {"uid": "x"}, None, "is not of type 'string', 'null'")],
    "Secret": [("stringData", None, "stringdata", "Additional properties are not allowed")],
}
BROKEN_CASES = [(kind, *case) for kind, cases in BROKEN.items() for case in cases]


@pytest.mark.parametrize(("kind", "path", "value", "rename", "message"), BROKEN_CASES,
                         ids=[f"{c[0]}-{c[3] or c[1].split('/')[-1]}" for c in BROKEN_CASES])
def test_a_broken_object_is_rejected(objects: dict[str, Any], kind: str, path: str, value: Any, rename: str | None,
                                     message: str) -> None:
    [found] = problems([broken(objects[kind], path, value, rename=rename)])
    assert found and message in " ".join(found), found


def test_an_object_of_an_unknown_kind_is_rejected(objects: dict[str, Any]) -> None:
    pod_monitors, secrets = problems([{**objects["PodMonitor"], "kind": "PodMonitors"},
                                      {**objects["Secret"], "kind": "Secrets"}])
    assert pod_monitors == ["no Prometheus Operator schema for monitoring.coreos.com/v1 PodMonitors"]
    assert secrets and "Secrets" in secrets[0]


# One source each for the generated files.

def test_the_generated_files_are_what_their_sources_give() -> None:
    result = run_generator("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_fails_when_a_source_changes(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", deploy)
    alerts = deploy / "prometheus" / "rules" / "rucio-jupyterlab-alerts.yml"
    alerts.write_text(alerts.read_text().replace("> 0.05", "> 0.07"))
    dashboard = deploy / "grafana" / DASHBOARD.name
    dashboard.write_text(dashboard.read_text().replace("Rucio JupyterLab", "Rucio JupyterLab!", 1))
    z2jh = deploy / "prometheus" / "zero-to-jupyterhub.yml"
    z2jh.write_text(z2jh.read_text().replace("replacement: /user/$1/metrics", "replacement: /u/$1/metrics"))
    result = run_generator("--check", "--deploy", str(deploy))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"deploy/kubernetes/{name}: differ from their sources" for name in
                                          ["podmonitor.yaml", "prometheusrule.yaml", "grafana-dashboard.yaml"]]
    # Writing them makes the check pass again; the other files stay as they were.
    assert run_generator("--deploy", str(deploy)).returncode == 0
    assert run_generator("--check", "--deploy", str(deploy)).returncode == 0
    assert "> 0.07" in (deploy / "kubernetes" / "prometheusrule.yaml").read_text()
    assert (deploy / "kubernetes" / "secret.yaml").read_text() == (KUBERNETES_DIR / "secret.yaml").read_text()


def test_the_prometheusrule_carries_exactly_the_rule_files_groups(objects: dict[str, Any]) -> None:
    groups = [group for path in RULE_FILES for group in load_yaml(path)["groups"]]
    assert objects["PrometheusRule"]["spec"]["groups"] == groups


def test_promtool_checks_and_tests_the_rules_taken_out_of_the_cr(objects: dict[str, Any], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": objects["PrometheusRule"]["spec"]["groups"]}))
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout
    # The shipped rule unit tests pass on them too.
    [test_file] = RULE_TESTS
    tests = load_yaml(test_file)
    tests["rule_files"] = [str(rules)]
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(tmp_path / "test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_configmap_holds_exactly_the_dashboard(objects: dict[str, Any]) -> None:
    config_map = objects["ConfigMap"]
    assert config_map["data"] == {DASHBOARD.name: DASHBOARD.read_text()}
    assert config_map["metadata"]["labels"] == {"grafana_dashboard": "1"}


# The PodMonitor is zero-to-jupyterhub.yml's scrape job, field for field.

# Prometheus' relabel_config keys and the Operator's RelabelConfig fields (its API types' json names).
RELABEL_FIELDS = {"source_labels": "sourceLabels", "separator": "separator", "target_label": "targetLabel",
                  "regex": "regex", "modulus": "modulus", "replacement": "replacement", "action": "action"}


def test_the_podmonitor_relabelings_are_the_z2jh_scrape_configs(objects: dict[str, Any]) -> None:
    [job] = load_yaml(PROMETHEUS_DIR / "zero-to-jupyterhub.yml")["scrape_configs"]
    [endpoint] = objects["PodMonitor"]["spec"]["podMetricsEndpoints"]
    for rules, relabelings in [(job["relabel_configs"], endpoint["relabelings"]),
                               (job["metric_relabel_configs"], endpoint["metricRelabelings"])]:
        assert len(relabelings) == len(rules)
        for rule, relabeling in zip(rules, relabelings):
            assert relabeling == {RELABEL_FIELDS[key]: value for key, value in rule.items()}


def test_the_podmonitor_selects_the_pods_the_z2jh_scrape_config_does(objects: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS_DIR / "zero-to-jupyterhub.yml")
    [job] = config["scrape_configs"]
    [sd] = job["kubernetes_sd_configs"]
    spec = objects["PodMonitor"]["spec"]
    assert sd["role"] == "pod"
    assert spec["namespaceSelector"] == {"matchNames": sd["namespaces"]["names"]}
    assert [f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items()] == [s["label"] for s in sd["selectors"]]
    [endpoint] = spec["podMetricsEndpoints"]
    assert endpoint["port"] == "notebook-port"
    assert endpoint["interval"] == config["global"]["scrape_interval"]
    assert set(endpoint) == {"port", "interval", "authorization", "relabelings", "metricRelabelings"}
    # jupyter_server takes "Authorization: Bearer <token>"; the raw config's "token" type is the same header's word.
    assert endpoint["authorization"]["type"] == "Bearer"


def test_promtool_accepts_the_podmonitors_endpoint_as_a_scrape_config(objects: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    # What the Operator's schema cannot see (a replace without a target label, a regex that does not
    # compile), Prometheus' own config check does.
    token, targets = tmp_path / "token", tmp_path / "pods.json"
    token.write_text("a-token")
    targets.write_text("[]")
    config = tmp_path / "podmonitor.yml"
    config.write_text(yaml.safe_dump(podmonitor_scrape_config(objects["PodMonitor"], token, targets)))
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    broken_config = podmonitor_scrape_config(objects["PodMonitor"], token, targets)
    broken_config["scrape_configs"][0]["relabel_configs"][2]["regex"] = "(.+;"
    config.write_text(yaml.safe_dump(broken_config))
    assert promtool("check", "config", str(config)).returncode != 0


# The files agree with each other.

def test_the_token_secret_is_the_one_the_podmonitor_reads(objects: dict[str, Any]) -> None:
    secret, pod_monitor = objects["Secret"], objects["PodMonitor"]
    [endpoint] = pod_monitor["spec"]["podMetricsEndpoints"]
    credentials = endpoint["authorization"]["credentials"]
    assert secret["metadata"]["name"] == credentials["name"]
    assert list(secret["stringData"]) == [credentials["key"]]
    # The Operator reads the Secret from the PodMonitor's own namespace.
    assert secret["metadata"]["namespace"] == pod_monitor["metadata"]["namespace"]


def test_the_helm_values_give_the_hub_service_that_token_and_the_smallest_role(objects: dict[str, Any]) -> None:
    values = load_yaml(Z2JH_VALUES)
    assert values["hub"]["services"]["prometheus"]["apiToken"] == objects["Secret"]["stringData"]["token"]
    assert values["hub"]["loadRoles"]["prometheus"] == {"scopes": ["access:servers"], "services": ["prometheus"]}
    # Helm values for env must be strings; "True" is what prometheus_client reads as true.
    assert values["singleuser"]["extraEnv"] == {"PROMETHEUS_DISABLE_CREATED_SERIES": "True"}


def test_the_network_policy_admits_the_podmonitors_prometheus_on_its_port_only(objects: dict[str, Any]) -> None:
    policy, pod_monitor = objects["NetworkPolicy"], objects["PodMonitor"]
    spec = policy["spec"]
    assert [policy["metadata"]["namespace"]] == pod_monitor["spec"]["namespaceSelector"]["matchNames"]
    assert spec["podSelector"] == pod_monitor["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    [endpoint] = pod_monitor["spec"]["podMetricsEndpoints"]
    assert rule["ports"] == [{"port": endpoint["port"], "protocol": "TCP"}]
    # One source: Prometheus' pods in the PodMonitor's namespace (both selectors in one entry: AND, not OR).
    assert rule["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pod_monitor["metadata"]["namespace"]}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }]


def test_every_monitoring_object_carries_the_release_label_and_one_namespace(objects: dict[str, Any]) -> None:
    namespaces = {kind: obj["metadata"]["namespace"] for kind, obj in objects.items()}
    assert namespaces == {"Secret": "monitoring", "PodMonitor": "monitoring", "PrometheusRule": "monitoring",
                          "ConfigMap": "monitoring", "NetworkPolicy": "jhub"}
    for kind in ("PodMonitor", "PrometheusRule"):
        assert objects[kind]["metadata"]["labels"] == {"release": "kube-prometheus-stack"}


# The Kubernetes section of docs/operations.md.

def readme_section() -> str:
    return OPERATIONS.split("## Kubernetes with the Prometheus Operator")[1].split("\n## ")[0]


def test_the_readme_names_every_file_and_what_to_edit(objects: dict[str, Any]) -> None:
    section = readme_section()
    for path in KUBERNETES_DIR.iterdir():
        assert f"`{path.relative_to(REPO)}`" in section, path
    for namespace in {obj["metadata"]["namespace"] for obj in objects.values()}:
        assert f"`{namespace}`" in section
    assert f"`{objects['Secret']['stringData']['token']}`" in section
    assert "`release: kube-prometheus-stack`" in section
    assert "kubectl apply -k deploy/kubernetes/" in section
    assert f"`{GENERATOR.relative_to(REPO)}`" in section


def test_the_readme_network_policy_alternative_is_the_same_rule(objects: dict[str, Any]) -> None:
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", readme_section(), re.S) if "networkPolicy" in b]
    ingress = yaml.safe_load(block)["singleuser"]["networkPolicy"]["ingress"]
    assert ingress == objects["NetworkPolicy"]["spec"]["ingress"]
    # z2jh puts it verbatim into its singleuser NetworkPolicy: valid there too.
    policy = copy.deepcopy(objects["NetworkPolicy"])
    policy["spec"]["ingress"] = ingress
    assert problems([policy]) == [[]]


def test_the_readme_image_line_installs_a_wheel_of_this_package() -> None:
    section = readme_section()
    assert "RUN pip install --no-cache-dir rucio_metrics-*.whl" in section
    assert "RUN pip install --no-cache-dir rucio_metrics-*.whl" in Z2JH_VALUES.read_text()
