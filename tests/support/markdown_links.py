"""Relative links and images in Markdown pages, checked the way GitHub renders them.

``broken_links(page, root)`` lists every link or image of ``page`` whose file
is missing (or lies outside ``root``), and every ``#anchor`` that names no
heading of the page it points to. Links to other sites are left alone. Code
(fenced blocks and inline spans) is not searched for links; ATX headings
(``## Title``) and HTML ``id``/``name`` attributes are anchors, slugged as
GitHub does.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")  # [text](target "title"), also ![alt](...)
_INLINE_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]*)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.M)  # [label]: target
_HTML_LINK = re.compile(r"<(?:a|img|source)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_HTML_IMAGE = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.I)
_HTML_ANCHOR = re.compile(r"<[a-z][^>]*?\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.M)
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)


def outside_code_blocks(markdown: str) -> list[str]:
    """The lines of ``markdown`` that are not in a fenced code block."""
    kept, fence = [], ""
    for line in markdown.splitlines():
        opening = _FENCE.match(line)
        if fence:
            closes = opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence)
            if closes and not line.strip().lstrip(fence[0]):
                fence = ""
            continue
        if opening:
            fence = opening.group(1)
            continue
        kept.append(line)
    return kept


def prose(markdown: str) -> str:
    """``markdown`` without code: fenced blocks and inline spans."""
    return "\n".join(_CODE_SPAN.sub("", line) for line in outside_code_blocks(markdown))


def links(markdown: str) -> list[str]:
    """Every link and image target, in order of appearance.

    >>> links('See [a](docs/a.md#x "t"), ![p](p.png), `[no](code.md)`.\\n\\n[r]: <ref.md>\\n<img src="i.png">')
    ['docs/a.md#x', 'p.png', 'ref.md', 'i.png']
    """
    text = prose(markdown)
    found = [(m.start(), m.group(1)) for pattern in (_INLINE, _REFERENCE, _HTML_LINK) for m in pattern.finditer(text)]
    return [target for _, target in sorted(found)]


def images(markdown: str) -> list[str]:
    """Every image target, in order of appearance."""
    text = prose(markdown)
    found = [(m.start(), m.group(1)) for pattern in (_INLINE_IMAGE, _HTML_IMAGE) for m in pattern.finditer(text)]
    return [target for _, target in sorted(found)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case, punctuation gone, spaces to hyphens.

    >>> slug("Outbound metrics (calls to the Rucio server)")
    'outbound-metrics-calls-to-the-rucio-server'
    >>> slug("A JupyterHub fleet, through the hub's proxy")
    'a-jupyterhub-fleet-through-the-hubs-proxy'
    >>> slug("`rucio_metrics` and [Prometheus](https://prometheus.io/)")
    'rucio_metrics-and-prometheus'
    """
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every anchor of a page: its headings' slugs (repeats get -1, -2, ... as on GitHub) and HTML ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = "\n".join(outside_code_blocks(markdown))  # a heading's `code` is part of its anchor
    for match in _HEADING.finditer(text):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found.update(m.group(1) for m in _HTML_ANCHOR.finditer(text))
    return found


def broken_links(page: Path, root: Path) -> list[str]:
    """What is wrong with ``page``'s relative links and images, one line each; empty when all resolve."""
    markdown = page.read_text()
    image_targets = set(images(markdown))
    problems = []
    for target in links(markdown):
        if _EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path_part = urllib.parse.unquote(path_part.split("?")[0])
        if not path_part:
            resolved = page
        elif path_part.startswith("/"):  # GitHub resolves these from the repository's root
            resolved = root / path_part.lstrip("/")
        else:
            resolved = page.parent / path_part
        resolved = resolved.resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif target in image_targets and not resolved.is_file():
            problems.append(f"{target}: an image that is not a file")
        elif anchor and resolved.suffix == ".md" and urllib.parse.unquote(anchor) not in anchors(resolved.read_text()):
            problems.append(f"{target}: no heading #{anchor} in {resolved.name}")
    return problems
