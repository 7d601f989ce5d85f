"""Kubernetes objects checked against real schemas, since no cluster runs here.

- Core objects (Secret, ConfigMap, NetworkPolicy): the Kubernetes OpenAPI
  schemas shipped by PyPI ``kubernetes-validate``, strict (unknown fields fail).
- Prometheus Operator objects (PodMonitor, PrometheusRule): the validators of
  the npm package ``@kubernetes-models/prometheus-operator``, generated from
  the Operator's API types, run by ``operator_crd_validate.mjs`` under Node
  (``scripts/bootstrap`` installs the package into ``.node/``), with every field
  probed so that a misspelt one fails too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate

from ..servers.jupyter_server_process import REPO

KUBERNETES_VERSION = kubernetes_validate.latest_version()
NODE_PACKAGES = REPO / ".node"
OPERATOR_PACKAGE = NODE_PACKAGES / "node_modules" / "@kubernetes-models" / "prometheus-operator"
OPERATOR_API_GROUP = "monitoring.coreos.com"


def operator_models_version() -> str:
    return str(json.loads((OPERATOR_PACKAGE / "package.json").read_text())["version"])


def core_problems(obj: dict[str, Any]) -> list[str]:
    """What the Kubernetes schema of ``obj``'s kind rejects in it; [] when valid."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"/{'/'.join(map(str, error.path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no Kubernetes {KUBERNETES_VERSION} schema for {obj['apiVersion']} {obj['kind']}"]
    return []


def operator_problems(objects: list[dict[str, Any]]) -> list[list[str]]:
    """What the Operator's schemas reject in each object; [] for a valid one."""
    result = subprocess.run(
        ["node", str(Path(__file__).with_name("operator_crd_validate.mjs")), str(NODE_PACKAGES)],
        input=json.dumps(objects), capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    problems: list[list[str]] = json.loads(result.stdout)
    return problems


def problems(objects: list[dict[str, Any]]) -> list[list[str]]:
    """Each object against its schema, core or Operator."""
    operator = [o for o in objects if o["apiVersion"].startswith(OPERATOR_API_GROUP + "/")]
    operator_results = iter(operator_problems(operator) if operator else [])
    return [next(operator_results) if o in operator else core_problems(o) for o in objects]
