"""The README and every page under docs/: links and images resolve, and the picture shows at the top."""

from __future__ import annotations

import os
import re
import struct
import subprocess
from pathlib import Path

import pytest

from .servers.jupyter_server_process import REPO
from .support.markdown_links import broken_links, images

# Every page a reader may land on; a page added under docs/ is checked without being listed here.
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
PICTURE = "docs/prometheus-graph.png"


def assert_no_broken_links(page: Path, root: Path) -> None:
    problems = broken_links(page, root)
    assert not problems, f"{page.relative_to(root)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_and_image_resolves(page: Path) -> None:
    assert_no_broken_links(page, REPO)


def test_a_broken_link_a_missing_image_or_a_wrong_anchor_fails(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "picture.png").write_bytes(b"\x89PNG")
    (docs / "other.md").write_text("# Other page\n\n## Real heading, with `code`\n\n## Real heading, with `code`\n")
    page = docs / "page.md"
    good = (
        "# Page\n\n![a picture](../picture.png) and <img src=\"../picture.png\">, [other](other.md), "
        "[a heading](other.md#real-heading-with-code), [its repeat](other.md#real-heading-with-code-1), "
        "[up here](#page), [the root](/picture.png), [a site](https://example.org/missing.md), "
        "`[code](missing.md)`\n\n```\n[in a block](missing.md)\n```\n"
    )
    page.write_text(good)
    assert_no_broken_links(page, tmp_path)

    page.write_text(
        good + "[gone](missing.md) ![gone too](missing.png) [no heading](other.md#nope) [nor here](#nope) "
        "[outside](../../elsewhere.md) ![a folder](../docs)\n\n[ref]: also-missing.md\n"
    )
    assert broken_links(page, tmp_path) == [
        "missing.md: no such file",
        "missing.png: no such file",
        "other.md#nope: no heading #nope in other.md",
        "#nope: no heading #nope in page.md",
        "../../elsewhere.md: outside the repository",
        "../docs: an image that is not a file",
        "also-missing.md: no such file",
    ]
    with pytest.raises(AssertionError, match=r"missing\.md: no such file"):
        assert_no_broken_links(page, tmp_path)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_readme_shows_the_picture_at_its_top() -> None:
    readme = (REPO / "README.md").read_text()
    first_section = readme.split("\n## ", 1)[0]
    assert images(first_section)[:1] == [PICTURE], "the picture comes before the README's first section"
    assert re.search(r"`scripts/screenshot`", first_section), "the README says how to take the picture again"
    data = (REPO / PICTURE).read_bytes()
    width, height = png_size(data)
    assert width >= 1000 and height >= 800, (width, height)
    assert len(data) < 400_000, "keep the picture small: the README loads it"
    assert os.access(REPO / "scripts" / "screenshot", os.X_OK)


def test_the_readme_is_short_and_every_docs_page_is_one_link_away() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 10 * 1024, "the README is what a newcomer reads first: keep it under 10 KB"
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)(?:#[\w-]*)?\)", readme))
    pages = {str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")}
    assert pages <= linked, f"not linked from the README: {sorted(pages - linked)}"


def test_the_readme_has_what_a_newcomer_needs_first() -> None:
    sections = re.findall(r"^## (.+)$", (REPO / "README.md").read_text(), re.M)
    assert sections == ["Quick start", "Install on a server", "Metrics", "Options", "Scrape it", "Where next"]


# Every recipe that writes a token to a file writes it readable by its owner alone.
_TOKEN_WRITE = re.compile(r"openssl rand\b[^\n]*>\s*\S+")
SHIPPED_TEXT = [*PAGES, *sorted(p for p in (REPO / "deploy").rglob("*") if p.suffix in (".yml", ".yaml"))]


@pytest.mark.parametrize("path", SHIPPED_TEXT, ids=[str(p.relative_to(REPO)) for p in SHIPPED_TEXT])
def test_every_recipe_that_writes_a_token_makes_the_file_private(path: Path) -> None:
    text = path.read_text()
    for match in _TOKEN_WRITE.finditer(text):
        before = text[:match.start()].splitlines()[-4:]  # the same block: a umask a few lines up
        context = "\n".join(before) + text[match.start():match.end()]
        assert "umask 077" in context, f"{path.relative_to(REPO)}: {match.group(0)!r} without umask 077"


def test_the_one_server_token_recipe_runs_and_leaves_private_files(tmp_path: Path) -> None:
    # The docs' commands as written, with the two paths moved into a temporary folder.
    page = (REPO / "docs" / "one-server.md").read_text()
    [block] = [b for b in re.findall(r"```sh\n(.*?)```", page, re.S) if "/etc/jupyter/metrics-token" in b]
    script = (block.replace("/etc/jupyter/", f"{tmp_path}/jupyter-").replace("/etc/prometheus/", f"{tmp_path}/prom-")
              .replace("<the server's user>", "root").replace("-o prometheus", "-o root"))
    subprocess.run(["sh", "-e", "-c", script], check=True, timeout=30)
    for name in ("jupyter-metrics-token", "prom-metrics-token"):
        mode = (tmp_path / name).stat().st_mode & 0o777
        assert mode == 0o600, (name, oct(mode))
    assert (tmp_path / "jupyter-metrics-token").read_text() == (tmp_path / "prom-metrics-token").read_text()
