"""A deliberately broken copy of a document, for tests that show a check rejects what it should."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

Document = TypeVar("Document", bound=dict[str, Any])


def broken(document: Document, path: str, value: Any, *, rename: str | None = None) -> Document:
    """A copy of ``document`` with the field at ``path`` (slashes; digits index lists) set to ``value`` or renamed."""
    result = copy.deepcopy(document)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
    node: Any = result
    for part in parents:
        node = node[part]
    if rename is not None:
        node[rename] = node.pop(last)
    else:
        node[last] = value
    return result
