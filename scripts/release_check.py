"""Before a release: the tag, the version and everything that names the version agree.

Usage: ``python scripts/release_check.py vX.Y.Z`` (the release workflow runs it on the tag pushed).
The version lives in one place, ``rucio_metrics/__init__.py``; this lists what else must follow it.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def version(root: Path) -> str:
    """``__version__`` of the package, read without importing it."""
    found = re.search(r'^__version__ = "([^"]+)"', (root / "rucio_metrics" / "__init__.py").read_text(), re.M)
    if not found:
        raise SystemExit("rucio_metrics/__init__.py has no __version__")
    return found.group(1)


def problems(root: Path, tag: str) -> list[str]:
    """What is not ready to release ``tag``; empty when everything agrees."""
    v = version(root)
    found = []
    if tag != f"v{v}":
        found.append(f"the tag {tag!r} is not 'v{v}', the version in rucio_metrics/__init__.py")
    changelog = (root / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\S+))?", changelog, re.M)
    released = [(name, day) for name, day in releases if name != "Unreleased"]
    if not released or released[0][0] != v:
        found.append(f"CHANGELOG.md: the newest release section is not '## [{v}] - <date>'")
    else:
        day = released[0][1]
        try:
            # fromisoformat alone also takes 20261201 and week dates; Keep a Changelog wants YYYY-MM-DD.
            valid = bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", day)) and bool(date.fromisoformat(day))
        except ValueError:
            valid = False
        if not valid:
            found.append(f"CHANGELOG.md: the section of {v} has no ISO date (YYYY-MM-DD): {day!r}")
    if not re.search(rf"^\[{re.escape(v)}\]: \S+/releases/tag/v{re.escape(v)}$", changelog, re.M):
        found.append(f"CHANGELOG.md: no link '[{v}]: .../releases/tag/v{v}' at the end")
    if not re.search(rf"^\[Unreleased\]: \S+/compare/v{re.escape(v)}\.\.\.HEAD$", changelog, re.M):
        found.append(f"CHANGELOG.md: the [Unreleased] link does not compare from v{v} ('.../compare/v{v}...HEAD')")
    # What an operator copies: the pinned install, and what the extension list then shows.
    expected = {
        "README.md": [f"pip install rucio-metrics=={v}", f"rucio_metrics {v} OK"],
        "docs/kubernetes.md": [f"rucio-metrics=={v}"],
        "deploy/kubernetes/z2jh-values.yaml": [f"rucio-metrics=={v}"],
        # Each alert's runbook_url: the runbook of this release (the recording rule that sets its base).
        "deploy/prometheus/rules/rucio-jupyterlab-recording.yml": [f"/blob/v{v}/docs/runbook.md"],
    }
    for path, texts in expected.items():
        text = (root / path).read_text()
        found += [f"{path}: does not say {t!r}" for t in texts if t not in text]
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    found = problems(REPO, argv[1])
    for problem in found:
        print(f"release_check: {problem}", file=sys.stderr)
    if not found:
        print(f"release_check: ready to release {argv[1]}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
