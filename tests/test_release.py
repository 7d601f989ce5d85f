"""The release: the workflow against GitHub's published schema, and the check that the version is everywhere.

The built files themselves (twine, the wheel in a fresh environment) are tests/test_install.py's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import rucio_metrics

from .servers.jupyter_server_process import REPO

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
RELEASE_CHECK = REPO / "scripts" / "release_check.py"
TAG = f"v{rucio_metrics.__version__}"


def workflow() -> Any:
    """The workflow as GitHub reads it: YAML 1.1 makes the key ``on`` True, GitHub means "on"."""
    document = yaml.safe_load(WORKFLOW.read_text())
    document["on"] = document.pop(True)
    return document


def check_jsonschema(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("check-jsonschema")), "--builtin-schema", "vendor.github-workflows",
         *map(str, paths)], capture_output=True, text=True, timeout=120,
    )


# One way to break the workflow each; the schema must reject every one.
BREAKS: dict[str, Callable[[Any], object]] = {
    "no-runs-on": lambda w: w["jobs"]["build"].pop("runs-on"),
    "misspelt-steps": lambda w: w["jobs"]["test"].update(step=w["jobs"]["test"].pop("steps")),
    "unknown-permission-level": lambda w: w["jobs"]["publish"].update(permissions={"id-token": "always"}),
}


@pytest.fixture(scope="module")
def schema_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    """check-jsonschema's report on the workflow as loaded and on each broken copy, in one run."""
    folder = tmp_path_factory.mktemp("workflows")
    paths = []
    for name, break_it in {"as-loaded": lambda w: None, **BREAKS}.items():
        document = workflow()
        break_it(document)
        paths.append(folder / f"{name}.json")  # JSON: no YAML 1.1 reading of "on" on the way back
        paths[-1].write_text(json.dumps(document))
    done = check_jsonschema(*paths)
    return done.stdout + done.stderr


def test_the_workflow_is_valid_against_the_published_schema(schema_report: str) -> None:
    done = check_jsonschema(WORKFLOW)
    assert (done.returncode, done.stdout.strip()) == (0, "ok -- validation done"), done.stdout + done.stderr
    assert "as-loaded.json" not in schema_report  # the copy the broken ones start from is valid too


@pytest.mark.parametrize("name", BREAKS)
def test_the_schema_check_rejects_a_broken_workflow(schema_report: str, name: str) -> None:
    assert f"{name}.json::" in schema_report, schema_report


def test_a_version_tag_tests_builds_and_publishes_in_that_order() -> None:
    w = workflow()
    assert w["on"] == {"push": {"tags": ["v*"]}}
    jobs = w["jobs"]
    assert (jobs["build"]["needs"], jobs["publish"]["needs"]) == ("test", "build")
    test_steps = " ".join(step.get("run", "") for step in jobs["test"]["steps"])
    assert "scripts/test" in test_steps and 'release_check.py "$GITHUB_REF_NAME"' in test_steps
    build_steps = " ".join(step.get("run", "") for step in jobs["build"]["steps"])
    assert "python -m build" in build_steps and "twine check --strict dist/*" in build_steps


def test_publishing_uses_trusted_publishing_and_nothing_else_can_publish() -> None:
    w = workflow()
    # Least power: read-only by default; the OIDC token only where the upload happens.
    assert w["permissions"] == {"contents": "read"}
    for name, job in w["jobs"].items():
        assert job.get("permissions", {}) == ({"id-token": "write"} if name == "publish" else {}), name
    publish = w["jobs"]["publish"]
    assert publish["environment"] == "pypi"
    uses = [step["uses"] for step in publish["steps"]]
    assert uses == ["actions/download-artifact@v4", "pypa/gh-action-pypi-publish@release/v1"]
    # No token or password: trusted publishing needs none, so the repository holds none.
    assert "secrets." not in WORKFLOW.read_text() and "password" not in WORKFLOW.read_text()
    # Every action names a release (the publish action's documented ref is its release/v1 line), never @main.
    for job in w["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert not step["uses"].endswith(("@main", "@master")), step["uses"]


def release_check(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(cwd / "scripts" / "release_check.py"), *args],
                          capture_output=True, text=True, timeout=60)


def test_the_release_check_passes_for_this_version() -> None:
    done = release_check(TAG)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"release_check: ready to release {TAG}\n", "")


@pytest.fixture
def copy_of_the_release_files(tmp_path: Path) -> Path:
    for path in ("scripts/release_check.py", "rucio_metrics/__init__.py", "CHANGELOG.md", "README.md",
                 "docs/operations.md", "deploy/kubernetes/z2jh-values.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    return tmp_path


def test_the_release_check_names_what_does_not_follow_the_version(copy_of_the_release_files: Path) -> None:
    root = copy_of_the_release_files
    init = root / "rucio_metrics" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{rucio_metrics.__version__}"', '"9.9.9"'))
    done = release_check("v9.9.8", cwd=root)
    assert done.returncode == 1
    problems = done.stderr.splitlines()
    assert problems[0] == "release_check: the tag 'v9.9.8' is not 'v9.9.9', the version in rucio_metrics/__init__.py"
    assert "release_check: CHANGELOG.md: the newest release section is not '## [9.9.9] - <date>'" in problems
    assert "release_check: README.md: does not say 'pip install rucio-metrics==9.9.9'" in problems
    assert "release_check: deploy/kubernetes/z2jh-values.yaml: does not say 'rucio-metrics==9.9.9'" in problems
    assert len(problems) == 8, problems


def test_the_release_check_wants_a_dated_changelog_section(copy_of_the_release_files: Path) -> None:
    changelog = copy_of_the_release_files / "CHANGELOG.md"
    v = rucio_metrics.__version__
    text = changelog.read_text()
    for day in ("soon", "20261201", "2026-W48-2"):
        changelog.write_text(re.sub(rf"^## \[{re.escape(v)}\] - \S+", f"## [{v}] - {day}", text, flags=re.M))
        done = release_check(TAG, cwd=copy_of_the_release_files)
        assert done.returncode == 1
        assert done.stderr == f"release_check: CHANGELOG.md: the section of {v} has no ISO date (YYYY-MM-DD): {day!r}\n"


def test_the_changelog_is_keep_a_changelog() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog\n") and "https://keepachangelog.com/en/1.1.0/" in changelog
    headings = [line for line in changelog.splitlines() if line.startswith("## ")]
    assert headings[0] == "## [Unreleased]"
    assert "[Unreleased]: https://github.com/rucio/rucio-metrics/compare/" in changelog
    kinds = {line[4:] for line in changelog.splitlines() if line.startswith("### ")}
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
