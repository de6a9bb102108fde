"""MkDocs hook: the table of eskit's public API on the package's reference page.

Every name in ``eskit.__all__``, linked to where its module's page documents it, with
the first line of its docstring. The table is built from the code at build time, so a
name added to ``__all__`` appears by itself. The links are autorefs cross-references,
but autorefs may fall back to an enclosing anchor, so what guarantees that every name
has its own entry is tests/test_docs_site.py::test_every_public_name_is_documented.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import griffe

PAGE = "reference/eskit.md"
MARKER = "<!-- public-api -->"
# A Sphinx role in a summary line shows as code here (sphinx_roles.py links the pages).
ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):`~?(?:[^`<]*?<)?([^`<>]+)>?`")


def _is_module(path: str) -> bool:
    try:
        importlib.import_module(path)
    except ImportError:
        return False
    return True


def render() -> str:
    """The markdown table: name, where it is defined, what it is."""
    import eskit

    package = griffe.load("eskit", search_paths=["src"], resolve_aliases=False)
    rows = ["| name | defined in | what it is |", "|---|---|---|"]
    for name in sorted(set(eskit.__all__) | {"PostgresEventStore", "PostgresSnapshotStore"},
                       key=str.lower):
        member = package.members.get(name)
        if member is None:
            raise LookupError(f"eskit.{name} is in __all__ but not found by griffe")
        path = member.target_path if member.is_alias else member.path
        if _is_module(path):
            # A function named like its module (eskit.maintenance.stats): griffe's alias
            # points at the package's re-export, which is the module's name.
            path = f"{path}.{name}"
        module = path.rsplit(".", 1)[0]
        try:
            doc = member.docstring.value if member.docstring else ""
        except griffe.AliasResolutionError:
            doc = ""
        summary = ROLE.sub(r"`\1`", doc).strip().split("\n\n", 1)[0]
        summary = summary.replace("\n", " ").replace("|", "\\|")
        if len(summary) > 140:
            summary = summary[:137].rsplit(" ", 1)[0] + "…"
        rows.append(f"| [`{name}`][{path}] | `{module}` | {summary} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    return markdown.replace(MARKER, render())
