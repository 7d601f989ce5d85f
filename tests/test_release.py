"""The release: the workflow against GitHub's published schema, everything it runs pinned, and the check that
the version is everywhere.

The built files themselves (twine, the wheel in a fresh environment) are tests/test_install.py's.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import rucio_metrics

from .servers.jupyter_server_process import REPO

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
BUILD_REQUIREMENTS = ".github/release-requirements.txt"  # as the workflow names it, from the checkout's root
RELEASE_CHECK = REPO / "scripts" / "release_check.py"
TAG = f"v{rucio_metrics.__version__}"


def load_workflow(text: str) -> Any:
    """A workflow as GitHub reads it: YAML 1.1 makes the key ``on`` True, GitHub means "on"."""
    document = yaml.safe_load(text)
    document["on"] = document.pop(True)
    return document


def workflow() -> Any:
    return load_workflow(WORKFLOW.read_text())


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
    # Which job may ask for the OIDC token is one of hardening_problems' checks.
    publish = workflow()["jobs"]["publish"]
    assert publish["environment"] == "pypi"
    actions = [step["uses"].split("@")[0] for step in publish["steps"]]
    assert actions == ["actions/download-artifact", "pypa/gh-action-pypi-publish"]
    # No token or password: trusted publishing needs none, so the repository holds none.
    assert "secrets." not in WORKFLOW.read_text() and "password" not in WORKFLOW.read_text()


SHA_PINNED = re.compile(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}")
DIGEST_PINNED = re.compile(r"[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
PINNED_VERSION = re.compile(r"(?P<name>[A-Za-z0-9][\w.-]*)==(?P<version>[\w.+!-]+)")


def requirement_entries(text: str) -> list[str]:
    """A requirements file's entries, each with its continuation lines joined and comments dropped."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    return [entry for entry in (line.split("#", 1)[0].strip() for line in lines) if entry]


def hardening_problems(workflow_text: str, requirements_text: str) -> list[str]:
    """What would let the release run something other than what was reviewed: an action, an image or a build tool
    named by something that can move, a checkout that leaves the job's token on disk, an OIDC token outside the
    publish job."""
    problems = []
    w = load_workflow(workflow_text)
    jobs = w["jobs"]
    steps = [(name, step) for name, job in jobs.items() for step in job.get("steps", [])]

    # Actions: by the commit of a release, the release named in a comment (which Dependabot bumps with the SHA).
    uses = [step["uses"] for _, step in steps if "uses" in step]
    uses += [job["uses"] for job in jobs.values() if "uses" in job]  # a reusable workflow's job
    commented = Counter(re.findall(r"^\s*(?:- )?uses: (\S+)[ \t]+# v\d+(?:\.\d+){0,2}$", workflow_text, flags=re.M))
    for action, count in Counter(uses).items():
        if not SHA_PINNED.fullmatch(action):
            problems.append(f"{action}: not pinned by a full commit SHA")
        elif commented[action] != count:
            problems.append(f"{action}: not each use has a comment naming its release (# vX.Y.Z)")

    for name, job in jobs.items():
        for image in [job.get("container"), *(job.get("services") or {}).values()]:
            image = image.get("image") if isinstance(image, dict) else image
            if image is not None and not DIGEST_PINNED.fullmatch(image):
                problems.append(f"job {name}: the image {image} is not pinned by digest")

    # A persisted token would be readable by every later step, the whole test suite included.
    for name, step in steps:
        if step.get("uses", "").startswith("actions/checkout@"):
            if (step.get("with") or {}).get("persist-credentials") is not False:
                problems.append(f"job {name}: a checkout keeps the token on disk (persist-credentials is not false)")

    # Tools: only from the hashed file; the build backend too, so no build in an environment it fills itself.
    hashed_install = ["--require-hashes", "-r", BUILD_REQUIREMENTS]
    commands = {name: [line.strip() for step in job.get("steps", []) for line in step.get("run", "").splitlines()]
                for name, job in jobs.items()}
    for command in (command for job_commands in commands.values() for command in job_commands):
        install = re.search(r"\bpip[3x]?\s+install\b(.*)", command)
        if install and shlex.split(install[1]) != hashed_install:
            problems.append(f"{command!r}: installs other than {shlex.join(hashed_install)}")
        if re.search(r"-m build\b", command) and "--no-isolation" not in command.split():
            problems.append(f"{command!r}: builds in an environment it fills with a backend pinned by nothing")
    build_commands = commands.get("build", [])
    installed_at = [i for i, c in enumerate(build_commands) if c.endswith("pip install " + shlex.join(hashed_install))]
    built_at = [i for i, c in enumerate(build_commands) if re.search(r"-m build\b", c)]
    if not (installed_at and built_at and installed_at[0] < built_at[0]):
        problems.append(f"the build job does not install its tools with {shlex.join(hashed_install)} before building")

    pins = {}
    for entry in requirement_entries(requirements_text):
        spec, *options = entry.split()
        pinned = PINNED_VERSION.fullmatch(spec)
        if not pinned:
            problems.append(f"{BUILD_REQUIREMENTS}: {spec} is not pinned to one version (==)")
        else:
            pins[canonicalize_name(pinned["name"])] = pinned["version"]
        if not options or not all(HASH.fullmatch(option) for option in options):
            problems.append(f"{BUILD_REQUIREMENTS}: {spec} is not hashed (--hash=sha256: for each of its files)")
    backend = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    for needed in map(Requirement, ["build", "twine", *backend]):
        if pins.get(canonicalize_name(needed.name)) not in needed.specifier:
            problems.append(f"{BUILD_REQUIREMENTS}: no pin of {needed}")

    if w.get("permissions") != {"contents": "read"}:
        problems.append(f"the default permissions are {w.get('permissions')}, not contents: read alone")
    for name, job in jobs.items():
        if job.get("permissions", {}) != ({"id-token": "write"} if name == "publish" else {}):
            problems.append(f"job {name}: permissions {job.get('permissions')}")
    return problems


def test_the_release_runs_nothing_by_a_name_that_can_move() -> None:
    assert hardening_problems(WORKFLOW.read_text(), (REPO / BUILD_REQUIREMENTS).read_text()) == []
    # The suite's own image: Node 22 on Debian 12, the one scripts/bootstrap is made for.
    assert workflow()["jobs"]["test"]["container"].startswith("node:22-bookworm@sha256:")


# One way each to loosen the release: (file, pattern, replacement, what hardening_problems must then say).
LOOSENINGS: dict[str, tuple[str, str, str, str]] = {
    "checkout-by-tag": ("workflow", r"(actions/checkout@)[0-9a-f]{40}", r"\1v4",
                        r"actions/checkout@v4: not pinned by a full commit SHA"),
    "publish-by-branch": ("workflow", r"(gh-action-pypi-publish@)[0-9a-f]{40}", r"\1release/v1",
                          r"pypa/gh-action-pypi-publish@release/v1: not pinned"),
    "short-sha": ("workflow", r"(upload-artifact@[0-9a-f]{7})[0-9a-f]{33}", r"\1", r"upload-artifact@\w+: not pinned"),
    "no-release-comment": ("workflow", r"(setup-python@[0-9a-f]{40})  #.*$", r"\1", r"setup-python@\w+: not each use"),
    "a-step-written-inline": ("workflow", r"^( +)- uses: (actions/download-artifact@)[0-9a-f]{40}.*\n +with:\n"
                              r" +name: dist\n +path: dist/\n", r"\1- {uses: \2v4, with: {name: dist, path: dist/}}\n",
                              r"actions/download-artifact@v4: not pinned"),
    "image-by-tag": ("workflow", r"(container: node:22-bookworm)@sha256:[0-9a-f]{64}", r"\1",
                     r"job test: the image node:22-bookworm is not pinned by digest"),
    # Issue 26, bug 10: the test job's checkout without persist-credentials: false.
    "test-checkout-keeps-the-token": ("workflow", r"^ +with:\n +persist-credentials: false.*\n", "",
                                      r"job test: a checkout keeps the token on disk"),
    "build-checkout-keeps-the-token": ("workflow", r"(?s)(\n  build:.*?persist-credentials: )false", r"\1true",
                                       r"job build: a checkout keeps the token on disk"),
    "tools-by-name": ("workflow", r"pip install --require-hashes -r \S+", "pip install --upgrade build twine",
                      r"'python -m pip install --upgrade build twine': installs other than"),
    "a-package-beside-the-file": ("workflow", r"(pip install --require-hashes -r \S+)", r"\1 twine",
                                  r"release-requirements.txt twine': installs other than"),
    "hashes-not-required": ("workflow", r"pip install --require-hashes ", "pip install ",
                            r"the build job does not install its tools with --require-hashes"),
    "an-install-in-the-test-job": ("workflow", r"^( +)scripts/test$", r"\1pip install pyyaml\n\1scripts/test",
                                   r"'pip install pyyaml': installs other than"),
    "isolated-build": ("workflow", r"build --no-isolation", "build",
                       r"'python -m build': builds in an environment it fills"),
    "id-token-in-the-build-job": ("workflow", r"^(  build:\n)", r"\1    permissions:\n      id-token: write\n",
                                  r"job build: permissions \{'id-token': 'write'\}"),
    "id-token-for-every-job": ("workflow", r"^(  contents: read\n)", r"\1  id-token: write\n",
                               r"the default permissions are .*, not contents: read alone"),
    "a-requirement-without-hashes": ("requirements", r"^(twine==\S+) \\\n(?: +--hash=.*\n)+", r"\1\n",
                                     r"twine==\S+ is not hashed"),
    "a-requirement-unpinned": ("requirements", r"^twine==\S+ ", "twine ", r"twine is not pinned to one version"),
    "the-backend-left-out": ("requirements", r"^setuptools==\S+ \\\n(?: +--hash=.*\n)+", "",
                             r"no pin of setuptools"),
}


@pytest.mark.parametrize("name", LOOSENINGS)
def test_each_loosening_of_the_release_is_named(name: str) -> None:
    where, pattern, replacement, expected = LOOSENINGS[name]
    texts = {"workflow": WORKFLOW.read_text(), "requirements": (REPO / BUILD_REQUIREMENTS).read_text()}
    texts[where], replaced = re.subn(pattern, replacement, texts[where], count=1, flags=re.M)
    assert replaced == 1, f"{pattern!r} is not in the {where} file: this loosening needs updating"
    problems = hardening_problems(texts["workflow"], texts["requirements"])
    assert any(re.search(expected, problem) for problem in problems), problems


def release_check(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(cwd / "scripts" / "release_check.py"), *args],
                          capture_output=True, text=True, timeout=60)


def test_the_release_check_passes_for_this_version() -> None:
    done = release_check(TAG)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"release_check: ready to release {TAG}\n", "")


@pytest.fixture
def copy_of_the_release_files(tmp_path: Path) -> Path:
    for path in ("scripts/release_check.py", "rucio_metrics/__init__.py", "CHANGELOG.md", "README.md",
                 "docs/kubernetes.md", "deploy/kubernetes/z2jh-values.yaml",
                 "deploy/prometheus/rules/rucio-jupyterlab-recording.yml"):
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
    assert ("release_check: deploy/prometheus/rules/rucio-jupyterlab-recording.yml: does not say "
            "'/blob/v9.9.9/docs/runbook.md'") in problems
    assert len(problems) == 9, problems


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


def test_dependabot_keeps_the_pins_moving_and_is_valid(tmp_path: Path) -> None:
    config = REPO / ".github" / "dependabot.yml"
    done = subprocess.run([str(Path(sys.executable).with_name("check-jsonschema")), "--builtin-schema",
                           "vendor.dependabot", str(config)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    updates = {(u["package-ecosystem"], u["directory"]) for u in yaml.safe_load(config.read_text())["updates"]}
    assert updates == {("github-actions", "/"), ("pip", "/.github")}
    broken = tmp_path / "dependabot.yml"
    broken.write_text(config.read_text().replace("interval: weekly", "interval: hourly", 1))
    rejected = subprocess.run([str(Path(sys.executable).with_name("check-jsonschema")), "--builtin-schema",
                               "vendor.dependabot", str(broken)], capture_output=True, text=True, timeout=120,
                              check=False)
    assert rejected.returncode != 0
