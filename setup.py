"""Packaging is declared in setup.cfg; this adds the one thing it cannot say: the README as PyPI shows it."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def readme_for_pypi() -> str:
    """README.md with its relative links and images pointing at this release's tag: PyPI resolves none."""
    config = configparser.ConfigParser()
    config.read(HERE / "setup.cfg")
    repository = config["metadata"]["url"]
    init = (HERE / "rucio_metrics" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', init, re.M)
    assert found, "rucio_metrics/__init__.py has no __version__"
    tag = "v" + found.group(1)

    def absolute(link: re.Match[str]) -> str:
        text, target = link.group(1), link.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:|#", target):  # a URL already, or an anchor of the README itself
            return link.group(0)
        kind = "raw" if text.startswith("!") else "blob"
        return f"{text}({repository}/{kind}/{tag}/{target})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", absolute, (HERE / "README.md").read_text())


setup(long_description=readme_for_pypi())
