"""deploy/kubernetes/: the objects an operator applies next to kube-prometheus-stack and Zero to JupyterHub.

No cluster runs here, so every object is checked against its real schema
(tests/support/kubernetes_schemas.py), the generated files against their one source
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

import rucio_metrics

from .servers.jupyter_server_process import REPO
from .support.broken_copy import broken
from .support.deploy_files import (
    DASHBOARD,
    KUBERNETES_DIR,
    KUSTOMIZATION,
    POD_LISTENER_PORT,
    PROMETHEUS_DIR,
    RULE_FILES,
    SINGLEUSER_POLICY,
    Z2JH_VALUES,
    kubernetes_objects,
    load_yaml,
    podmonitor_scrape_config,
    promtool,
)
from .support.kubernetes_schemas import KUBERNETES_VERSION, operator_models_version, problems
from .support.network_policies import (
    HUB_POD,
    NOTEBOOK_PORT,
    OTHER_USER_POD,
    PROMETHEUS_POD,
    PROXY_POD,
    USER_POD,
    Pod,
    admitted,
    z2jh_singleuser_policy,
)

GENERATOR = REPO / "scripts" / "kubernetes_manifests.py"
GENERATED = ["grafana-dashboard.yaml", "podmonitor.yaml", "prometheusrule.yaml"]
KUBERNETES_PAGE = (REPO / "docs" / "kubernetes.md").read_text()


@pytest.fixture(scope="module")
def objects() -> dict[str, Any]:
    return kubernetes_objects()


@pytest.fixture(scope="module")
def singleuser_policy() -> dict[str, Any]:
    """z2jh's singleuser NetworkPolicy as the chart renders it with the shipped values."""
    policy = z2jh_singleuser_policy(load_yaml(Z2JH_VALUES))
    assert policy is not None
    return policy


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GENERATOR), *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture(scope="module")
def our_policy() -> dict[str, Any]:
    """The ingress policy for a release whose z2jh singleuser policy is off."""
    return dict(load_yaml(SINGLEUSER_POLICY))


def test_the_folder_holds_the_objects_the_kustomization_applies_and_the_helm_values() -> None:
    resources = load_yaml(KUSTOMIZATION)["resources"]
    assert sorted(p.name for p in KUBERNETES_DIR.iterdir()) == sorted(
        [*resources, KUSTOMIZATION.name, Z2JH_VALUES.name, SINGLEUSER_POLICY.name])
    # Nothing holds a credential: no Secret, no hub token anywhere.
    assert sorted(kubernetes_objects()) == ["ConfigMap", "PodMonitor", "PrometheusRule"]
    assert set(GENERATED) <= set(resources)
    assert SINGLEUSER_POLICY.name not in resources  # only where z2jh's own policy is off


# Schemas.

def test_every_object_is_valid_against_its_schema(objects: dict[str, Any], our_policy: dict[str, Any]) -> None:
    found = dict(zip(objects, problems(list(objects.values()))))
    assert found == {kind: [] for kind in objects}, (KUBERNETES_VERSION, operator_models_version())
    assert problems([our_policy]) == [[]], KUBERNETES_VERSION


BROKEN = {
    # kind: [(path, value, rename, what the validator says)]
    "PodMonitor": [
        ("spec/podMetricsEndpoints/0/relabelings/0/action", "keeep", None, "must be equal to one of the allowed"),
        ("spec/podMetricsEndpoints/0/relabelings/0/sourceLabels", "__meta_kubernetes_pod_phase", None,
         "must be array"),
        ("spec/podMetricsEndpoints/0/relabelings/0/sourceLabels", None, "sourcelabels", "not a field"),
        ("spec/podMetricsEndpoints/0/port", 9101, None, "must be string"),
        ("spec/podMetricsEndpoints/0/interval", "30 seconds", None, "must match pattern"),
        ("spec/bodySizeLimit", "2 MB", None, "must match pattern"),
        ("spec/sampleLimit", "10000", None, "must be integer"),
    ],
    "PrometheusRule": [
        ("spec/groups/0/rules/0/for", "ten minutes", None, "must match pattern"),
        ("spec/groups/0/rules/0/labels/severity", 3, None, "must be string"),
        ("spec/groups/0/rules", None, "rule", "not a field"),
    ],
    "NetworkPolicy": [
        ("spec/ingress/1/ports/0/port", ["notebook-port"], None, "is not valid under any of the given schemas"),
        ("spec/ingress/1/from/0/podSelector", None, "podselector", "Additional properties are not allowed"),
    ],
    "ConfigMap": [("data/rucio-jupyterlab.json", {"uid": "x"}, None, "is not of type 'string', 'null'")],
    "OurNetworkPolicy": [
        ("spec/ingress/1/ports/0/port", ["9101"], None, "is not valid under any of the given schemas"),
        ("spec/policyTypes", None, "policytypes", "Additional properties are not allowed"),
    ],
}
BROKEN_CASES = [(kind, *case) for kind, cases in BROKEN.items() for case in cases]


@pytest.mark.parametrize(("kind", "path", "value", "rename", "message"), BROKEN_CASES,
                         ids=[f"{c[0]}-{c[3] or c[1].split('/')[-1]}" for c in BROKEN_CASES])
def test_a_broken_object_is_rejected(objects: dict[str, Any], singleuser_policy: dict[str, Any],
                                     our_policy: dict[str, Any], kind: str, path: str, value: Any,
                                     rename: str | None, message: str) -> None:
    obj = {"NetworkPolicy": singleuser_policy, "OurNetworkPolicy": our_policy}.get(kind) or objects[kind]
    [found] = problems([broken(obj, path, value, rename=rename)])
    assert found and message in " ".join(found), found


def test_an_object_of_an_unknown_kind_is_rejected(objects: dict[str, Any]) -> None:
    pod_monitors, config_maps = problems([{**objects["PodMonitor"], "kind": "PodMonitors"},
                                          {**objects["ConfigMap"], "kind": "ConfigMaps"}])
    assert pod_monitors == ["no Prometheus Operator schema for monitoring.coreos.com/v1 PodMonitors"]
    assert config_maps and "ConfigMaps" in config_maps[0]


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
    z2jh.write_text(z2jh.read_text().replace("replacement: $1:9101", "replacement: $1:9102"))
    result = run_generator("--check", "--deploy", str(deploy))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"deploy/kubernetes/{name}: differ from their sources" for name in
                                          ["podmonitor.yaml", "prometheusrule.yaml", "grafana-dashboard.yaml"]]
    # Writing them makes the check pass again; the other files stay as they were.
    assert run_generator("--deploy", str(deploy)).returncode == 0
    assert run_generator("--check", "--deploy", str(deploy)).returncode == 0
    assert "> 0.07" in (deploy / "kubernetes" / "prometheusrule.yaml").read_text()
    assert (deploy / "kubernetes" / Z2JH_VALUES.name).read_text() == Z2JH_VALUES.read_text()


def test_the_prometheusrule_carries_exactly_the_rule_files_groups(objects: dict[str, Any]) -> None:
    groups = [group for path in RULE_FILES for group in load_yaml(path)["groups"]]
    assert objects["PrometheusRule"]["spec"]["groups"] == groups


def test_promtool_checks_the_rules_taken_out_of_the_cr(objects: dict[str, Any], tmp_path: Path) -> None:
    # promtool reads them as the Operator hands them over. Their unit tests are the rule files' own:
    # the test above finds the groups equal, and test_deploy.py runs every unit test on those.
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": objects["PrometheusRule"]["spec"]["groups"]}))
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 92 rules found" in result.stdout


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


def test_the_podmonitor_has_the_z2jh_scrape_configs_limits(objects: dict[str, Any]) -> None:
    [job] = load_yaml(PROMETHEUS_DIR / "zero-to-jupyterhub.yml")["scrape_configs"]
    spec = objects["PodMonitor"]["spec"]
    limits = {key: value for key, value in spec.items() if key.endswith("Limit")}
    assert limits == {"sampleLimit": job["sample_limit"], "labelLimit": job["label_limit"],
                      "labelNameLengthLimit": job["label_name_length_limit"],
                      "labelValueLengthLimit": job["label_value_length_limit"],
                      "bodySizeLimit": job["body_size_limit"]}


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
    # No credential: nothing a user's code could keep.
    assert set(endpoint) == {"port", "interval", "relabelings", "metricRelabelings"}


def test_promtool_accepts_the_podmonitors_endpoint_as_a_scrape_config(objects: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    # What the Operator's schema cannot see (a replace without a target label, a regex that does not
    # compile), Prometheus' own config check does.
    targets = tmp_path / "pods.json"
    targets.write_text("[]")
    config = tmp_path / "podmonitor.yml"
    config.write_text(yaml.safe_dump(podmonitor_scrape_config(objects["PodMonitor"], targets)))
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    broken_config = podmonitor_scrape_config(objects["PodMonitor"], targets)
    broken_config["scrape_configs"][0]["relabel_configs"][2]["regex"] = "(.+;"
    config.write_text(yaml.safe_dump(broken_config))
    assert promtool("check", "config", str(config)).returncode != 0


# The files agree with each other.

def listener_port_scraped() -> int:
    """The port the shipped relabelling scrapes each pod at."""
    [job] = load_yaml(PROMETHEUS_DIR / "zero-to-jupyterhub.yml")["scrape_configs"]
    ports = {int(r["replacement"].rsplit(":", 1)[1]) for r in job["relabel_configs"]
             if r.get("target_label") == "__address__"}
    assert len(ports) == 1, ports
    return ports.pop()


def test_the_helm_values_turn_on_the_listener_the_relabelling_scrapes_and_need_no_hub_token() -> None:
    values = load_yaml(Z2JH_VALUES)
    assert "hub" not in values  # no hub service, role or token for Prometheus
    [mounted] = values["singleuser"]["extraFiles"].values()
    assert mounted["mountPath"] == "/usr/local/etc/jupyter/jupyter_server_config.json"
    assert mounted["data"] == {"RucioMetrics": {"metrics_port": listener_port_scraped(), "metrics_ip": ""}}
    assert listener_port_scraped() == POD_LISTENER_PORT
    # Helm values for env must be strings; "True" is what prometheus_client reads as true.
    assert values["singleuser"]["extraEnv"] == {"PROMETHEUS_DISABLE_CREATED_SERIES": "True"}


def test_the_singleuser_policy_with_the_shipped_ingress_is_valid(singleuser_policy: dict[str, Any]) -> None:
    # z2jh puts singleuser.networkPolicy.ingress verbatim into its policy: valid there.
    assert problems([singleuser_policy]) == [[]], KUBERNETES_VERSION


def test_the_ingress_rules_admit_the_podmonitors_prometheus_on_the_listener_only(
    objects: dict[str, Any], our_policy: dict[str, Any],
) -> None:
    pod_monitor = objects["PodMonitor"]
    [rule] = load_yaml(Z2JH_VALUES)["singleuser"]["networkPolicy"]["ingress"]
    assert rule["ports"] == [{"port": listener_port_scraped(), "protocol": "TCP"}]
    # One source: Prometheus' pods in the PodMonitor's namespace (both selectors in one entry: AND, not OR).
    assert rule["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pod_monitor["metadata"]["namespace"]}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }]
    # Our own policy (for a release without z2jh's) holds the same rule, after the hub's and the proxy's.
    assert our_policy["spec"]["ingress"][1] == rule
    assert our_policy["spec"]["policyTypes"] == ["Ingress"]  # egress untouched


# Who reaches a user's pod, and on which port.
GRAFANA_POD = Pod("monitoring", {"app.kubernetes.io/name": "grafana"})
ELSEWHERE_POD = Pod("another-team", {"app.kubernetes.io/name": "prometheus"})  # the right label, wrong namespace


def reach(policies: list[dict[str, Any]]) -> dict[str, tuple[bool, bool]]:
    """``{who: (notebook port admitted, listener admitted)}`` for a user's pod under ``policies``."""
    sources = {"hub": HUB_POD, "proxy": PROXY_POD, "prometheus": PROMETHEUS_POD, "another user": OTHER_USER_POD,
               "grafana": GRAFANA_POD, "another namespace": ELSEWHERE_POD}
    return {who: (admitted(policies, pod, USER_POD, NOTEBOOK_PORT),
                  admitted(policies, pod, USER_POD, POD_LISTENER_PORT)) for who, pod in sources.items()}


EXPECTED_REACH = {"hub": (True, False), "proxy": (True, False), "prometheus": (False, True),
                  "another user": (False, False), "grafana": (False, False), "another namespace": (False, False)}


def test_with_z2jhs_policy_only_prometheus_reaches_the_listener(objects: dict[str, Any]) -> None:
    rendered = z2jh_singleuser_policy(load_yaml(Z2JH_VALUES))
    assert rendered is not None
    assert reach([*objects.values(), rendered]) == EXPECTED_REACH


def test_with_z2jhs_policy_off_ours_gives_the_same(objects: dict[str, Any], our_policy: dict[str, Any]) -> None:
    values = copy.deepcopy(load_yaml(Z2JH_VALUES))
    values["singleuser"]["networkPolicy"]["enabled"] = False
    assert z2jh_singleuser_policy(values) is None
    # Without a policy, every pod reaches every user's server, another user's included: why ours is shipped.
    assert set(reach(list(objects.values())).values()) == {(True, True)}
    assert reach([*objects.values(), our_policy]) == EXPECTED_REACH


def test_the_network_model_sees_what_a_policy_of_our_own_did() -> None:
    # The values' rule alone, as a policy of its own: it would isolate the pods from the hub and the proxy.
    ours = {"kind": "NetworkPolicy", "metadata": {"namespace": "jhub"}, "spec": {
        "podSelector": {"matchLabels": {"component": "singleuser-server"}}, "policyTypes": ["Ingress"],
        "ingress": load_yaml(Z2JH_VALUES)["singleuser"]["networkPolicy"]["ingress"]}}
    assert admitted([ours], PROMETHEUS_POD, USER_POD, POD_LISTENER_PORT)
    assert not admitted([ours], PROXY_POD, USER_POD)
    # The access label counts only in the release's namespace, unless interNamespaceAccessLabels: accept.
    labelled = copy.deepcopy(PROMETHEUS_POD)
    labelled.labels["hub.jupyter.org/network-access-singleuser"] = "true"
    for accept, expected in (("ignore", False), ("accept", True)):
        policy = z2jh_singleuser_policy({"singleuser": {"networkPolicy": {"interNamespaceAccessLabels": accept}}})
        assert policy is not None
        assert admitted([policy], labelled, USER_POD) == expected, accept


def test_a_policy_that_let_other_users_in_is_caught(objects: dict[str, Any], our_policy: dict[str, Any]) -> None:
    # The check above is not vacuous: a rule whose "from" was dropped admits everyone on the listener.
    loose = copy.deepcopy(our_policy)
    del loose["spec"]["ingress"][1]["from"]
    assert reach([*objects.values(), loose])["another user"] == (False, True)


def test_every_monitoring_object_carries_the_release_label_and_one_namespace(objects: dict[str, Any]) -> None:
    namespaces = {kind: obj["metadata"]["namespace"] for kind, obj in objects.items()}
    assert namespaces == {"PodMonitor": "monitoring", "PrometheusRule": "monitoring", "ConfigMap": "monitoring"}
    for kind in ("PodMonitor", "PrometheusRule"):
        assert objects[kind]["metadata"]["labels"] == {"release": "kube-prometheus-stack"}


# The Prometheus Operator's section of docs/kubernetes.md.

def readme_section() -> str:
    return KUBERNETES_PAGE.split("## With the Prometheus Operator\n")[1].split("\n## ")[0]


def test_the_readme_names_every_file_and_what_to_edit(objects: dict[str, Any]) -> None:
    section = readme_section()
    for path in KUBERNETES_DIR.iterdir():
        assert f"`{path.relative_to(REPO)}`" in section, path
    for namespace in {obj["metadata"]["namespace"] for obj in objects.values()}:
        assert f"`{namespace}`" in section
    assert "`release: kube-prometheus-stack`" in section
    assert "kubectl apply -k deploy/kubernetes/" in section
    assert f"`{GENERATOR.relative_to(REPO)}`" in section


def test_the_docs_network_policy_rule_is_the_shipped_one() -> None:
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", readme_section(), re.S) if "networkPolicy" in b]
    ingress = yaml.safe_load(block)["singleuser"]["networkPolicy"]["ingress"]
    assert ingress == load_yaml(Z2JH_VALUES)["singleuser"]["networkPolicy"]["ingress"]


def test_the_image_line_installs_this_release_or_a_wheel_of_the_checkout() -> None:
    # The released distribution at this version (scripts/release_check.py keeps the pins in step),
    # and the wheel route for unreleased code.
    release = f"RUN pip install --no-cache-dir rucio-metrics=={rucio_metrics.__version__}"
    for text in (readme_section(), Z2JH_VALUES.read_text()):
        assert release in text
        assert "RUN pip install --no-cache-dir rucio_metrics-*.whl" in text


# Every z2jh Helm value the docs and deploy/ name, as checked against z2jh's own values.schema.yaml of
# chart 4.4.0 (read in the chart's repository): the key exists there, and where its values are an enum,
# the ones we name are in it. "<name>" stands for a key of the operator's choosing (a service, a role).
Z2JH_CHART_CHECKED = "4.4.0"
Z2JH_KEYS: dict[str, set[str] | None] = {
    "hub.baseUrl": None,
    "hub.services.<name>.apiToken": None,
    "hub.loadRoles.<name>.scopes": None,
    "hub.loadRoles.<name>.services": None,
    "singleuser.extraEnv": None,
    "singleuser.extraFiles": None,
    "singleuser.extraFiles.<name>.mountPath": None,
    "singleuser.extraFiles.<name>.data": None,
    "singleuser.networkPolicy.enabled": {"true", "false"},
    "singleuser.networkPolicy.ingress": None,
    "singleuser.networkPolicy.interNamespaceAccessLabels": {"accept", "ignore"},
}
# Below these, the keys are the operator's (a service's name) or free-form (env names, rule lists).
_NAMED = ("hub.services", "hub.loadRoles", "singleuser.extraFiles")
_FREE_FORM = ("singleuser.extraEnv", "singleuser.networkPolicy.ingress", "singleuser.extraFiles.<name>.data")
_DOTTED = re.compile(r"(?<![\w./-])((?:hub|singleuser|proxy)(?:\.[a-zA-Z][A-Za-z0-9]*)+)(?::\s*([\w-]+))?")


def z2jh_keys_in_text(text: str) -> dict[str, set[str]]:
    """Dotted z2jh keys written in ``text`` (``singleuser.networkPolicy.enabled: false``), with values given."""
    found: dict[str, set[str]] = {}
    for key, value in _DOTTED.findall(text):
        if key.startswith(("hub.jupyter.org", "hub.example")):
            continue  # a label's domain or a host name, not a value
        for prefix in _NAMED:
            if key.startswith(prefix + "."):
                key = re.sub(rf"^{re.escape(prefix)}\.[^.]+", prefix + ".<name>", key)
        found.setdefault(key, set()).update([value] if value else [])
    return found


def z2jh_keys_in_values(values: dict[str, Any], prefix: str = "") -> dict[str, set[str]]:
    """The leaf keys of z2jh values as dotted paths, with the scalar values they set."""
    found: dict[str, set[str]] = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if prefix in _NAMED:
            path = f"{prefix}.<name>"
        if isinstance(value, dict) and path not in _FREE_FORM:
            for sub, given in z2jh_keys_in_values(value, path).items():
                found.setdefault(sub, set()).update(given)
        else:
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            found.setdefault(path, set()).update([shown] if not isinstance(value, (dict, list)) else [])
    return found


def z2jh_keys_named_by_the_project() -> dict[str, set[str]]:
    """Keys written in the README, docs/ and deploy/ (text and comments), and set in YAML values there."""
    docs = [(REPO / "README.md").read_text(), *(p.read_text() for p in sorted((REPO / "docs").glob("*.md")))]
    deploy = [p.read_text() for p in sorted((REPO / "deploy").rglob("*")) if p.suffix in (".yml", ".yaml")]
    sources = [z2jh_keys_in_text(t) for t in docs + deploy]
    sources.append(z2jh_keys_in_values(load_yaml(Z2JH_VALUES)))
    for text in docs:  # YAML blocks of z2jh values in the docs
        for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
            values = yaml.safe_load(block)
            if isinstance(values, dict) and set(values) & {"hub", "singleuser", "proxy"}:
                sources.append(z2jh_keys_in_values(values))
    found: dict[str, set[str]] = {}
    for source in sources:
        for key, given in source.items():
            found.setdefault(key, set()).update(given)
    return found


DEPLOY_FILES_WITH_TEXT = sorted(p for p in (REPO / "deploy").rglob("*") if p.suffix in (".yml", ".yaml"))


def test_every_z2jh_key_the_project_names_is_in_z2jhs_schema() -> None:
    named = z2jh_keys_named_by_the_project()
    assert set(named) <= set(Z2JH_KEYS), (sorted(set(named) - set(Z2JH_KEYS)), Z2JH_CHART_CHECKED)
    for key, given in named.items():
        allowed = Z2JH_KEYS[key]
        if allowed is not None:
            assert given <= allowed, (key, given, Z2JH_CHART_CHECKED)
    # The ones the recipe depends on are named at all (so this test reads the places it should).
    assert {"singleuser.networkPolicy.ingress", "singleuser.extraFiles.<name>.mountPath", "hub.baseUrl",
            "singleuser.networkPolicy.enabled", "singleuser.networkPolicy.interNamespaceAccessLabels"} <= set(named)


def test_the_z2jh_key_check_catches_a_key_z2jh_does_not_have() -> None:
    # What the docs once said; z2jh's schema rejects it (additional properties not allowed).
    found = z2jh_keys_in_text("z2jh's `singleuser.networkPolicy.interNamespaceLabeledIngress: allow` with")
    assert set(found) - set(Z2JH_KEYS) == {"singleuser.networkPolicy.interNamespaceLabeledIngress"}
    wrong_value = z2jh_keys_in_text("`singleuser.networkPolicy.interNamespaceAccessLabels: allow`")
    assert not wrong_value["singleuser.networkPolicy.interNamespaceAccessLabels"] <= (
        Z2JH_KEYS["singleuser.networkPolicy.interNamespaceAccessLabels"] or set())
