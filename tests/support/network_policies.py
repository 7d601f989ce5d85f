"""Kubernetes NetworkPolicy ingress semantics, and the singleuser policy z2jh renders, for tests without a cluster.

``admitted`` follows the Kubernetes rules for ingress (matchLabels selectors,
which is all the shipped files and z2jh use): a pod no ingress policy selects
admits every connection; once one selects it, only what some selecting policy
allows gets in (policies add up, none takes away). A ``podSelector`` alone in
a peer means pods of the policy's own namespace; with a ``namespaceSelector``
both must match.

``z2jh_singleuser_policy`` is what z2jh's ``templates/singleuser/netpol.yaml``
(chart 4.4.0) renders from the values the tests care about: the singleuser
pods selected, ``notebook-port`` open to pods labelled
``hub.jupyter.org/network-access-singleuser: "true"`` (the hub's and the
proxy's pods carry it) of the release's namespace, or of any namespace with
``interNamespaceAccessLabels: accept``, then ``singleuser.networkPolicy.ingress``
appended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACCESS_LABEL = "hub.jupyter.org/network-access-singleuser"


@dataclass
class Pod:
    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Kubernetes labels every namespace with its own name.
        self.namespace_labels = {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


# The pods of a z2jh release in "jhub" (labels from the chart's templates) and kube-prometheus-stack's Prometheus.
RELEASE = {"app": "jupyterhub", "release": "jhub"}
USER_POD = Pod("jhub", {**RELEASE, "component": "singleuser-server"})
OTHER_USER_POD = Pod("jhub", {**RELEASE, "component": "singleuser-server"})  # another user's server
HUB_POD = Pod("jhub", {**RELEASE, "component": "hub", ACCESS_LABEL: "true"})
PROXY_POD = Pod("jhub", {**RELEASE, "component": "proxy", ACCESS_LABEL: "true"})
PROMETHEUS_POD = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
NOTEBOOK_PORT = "notebook-port"


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    unknown = set(selector) - {"matchLabels"}
    assert not unknown, f"selector fields not modelled here: {unknown}"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict[str, Any], policy_namespace: str, pod: Pod) -> bool:
    assert "ipBlock" not in peer, "ipBlock peers are not modelled here"
    if "namespaceSelector" not in peer:
        return pod.namespace == policy_namespace and _matches(peer.get("podSelector"), pod.labels)
    return _matches(peer["namespaceSelector"], pod.namespace_labels) and _matches(peer.get("podSelector"), pod.labels)


def _rule_admits(rule: dict[str, Any], policy_namespace: str, source: Pod, port: str) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") in (None, port) for p in ports):
        return False
    peers = rule.get("from")
    return not peers or any(_peer_matches(peer, policy_namespace, source) for peer in peers)


def admitted(policies: list[dict[str, Any]], source: Pod, target: Pod, port: str = NOTEBOOK_PORT) -> bool:
    """Whether ``source`` may connect to ``target``'s ``port`` under ``policies``."""
    selecting = [
        p for p in policies
        if p["kind"] == "NetworkPolicy" and p["metadata"]["namespace"] == target.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _matches(p["spec"]["podSelector"], target.labels)
    ]
    if not selecting:
        return True
    return any(
        _rule_admits(rule, p["metadata"]["namespace"], source, port)
        for p in selecting for rule in p["spec"].get("ingress") or []
    )


def z2jh_singleuser_policy(values: dict[str, Any], namespace: str = "jhub") -> dict[str, Any] | None:
    """The singleuser NetworkPolicy z2jh renders for ``values``; None when ``networkPolicy.enabled`` is false."""
    settings = values.get("singleuser", {}).get("networkPolicy", {})
    if not settings.get("enabled", True):
        return None
    labelled: dict[str, Any] = {"podSelector": {"matchLabels": {ACCESS_LABEL: "true"}}}
    sources = [labelled]
    if settings.get("interNamespaceAccessLabels", "ignore") == "accept":
        labelled["namespaceSelector"] = {"matchLabels": {}}
        sources.append({"namespaceSelector": {"matchLabels": {ACCESS_LABEL: "true"}}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "singleuser", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {**RELEASE, "component": "singleuser-server"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"port": NOTEBOOK_PORT}], "from": sources}, *settings.get("ingress", [])],
        },
    }
