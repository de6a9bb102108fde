"""Griffe extension: Sphinx roles in eskit's docstrings become site cross-references.

The docstrings are written to read well in ``help()`` and in an editor, and use
Sphinx roles (:class:`~eskit.Event`, :meth:`append`). mkdocstrings renders Markdown,
where a role would show as ``:class:`` plus code; this rewrites each role, at build
time only, into an optional autorefs link to ``eskit.events.Event``: a link when the target
is on a reference page, plain inline code when it is not (a private helper, a name
outside eskit), so the build never gains a broken link. A fully qualified
``eskit.`` target that does not exist at all is a warning, which fails --strict.

Targets are resolved the way Sphinx would: qualified (``eskit.stores.base.EventStore``),
else relative to the documented object, its class and its module. Only the import
paths change; the docstrings in ``src/`` stay as they are.
"""

from __future__ import annotations

import importlib
import logging
import re
from types import ModuleType
from typing import Any

from griffe import Extension, Object

_log = logging.getLogger("mkdocs.plugins.eskit.sphinx_roles")

# :role:`target`, :role:`~target` (last name shown), :role:`Title <target>`.
ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):`(~?)(?:([^`<]*?)\s*<)?([^`<>]+)>?`")


_MISSING = object()


def _lookup(dotted: str) -> object:
    """The object ``dotted`` names at run time, or ``_MISSING``."""
    first, *rest = dotted.split(".")
    try:
        obj: object = importlib.import_module(first)
        for i, name in enumerate(rest):
            if not hasattr(obj, name) and isinstance(obj, ModuleType):
                importlib.import_module(".".join([first, *rest[: i + 1]]))
            obj = getattr(obj, name)
    except (ImportError, AttributeError):
        return _MISSING
    return obj


def _stale(dotted: str) -> bool:
    """Whether a qualified name surely does not exist (not just an instance attribute)."""
    if _lookup(dotted) is not _MISSING:
        return False
    parent = _lookup(dotted.rsplit(".", 1)[0])
    # Set in __init__, an attribute is on no class: only a missing module member, or a
    # missing parent, is certain.
    return parent is _MISSING or isinstance(parent, ModuleType)


class SphinxRoles(Extension):
    def _canonical(self, dotted: str) -> str | None:
        """The anchor mkdocstrings gives the object ``dotted`` names, if it renders one."""
        obj = _lookup(dotted)
        if obj is _MISSING:
            return None
        if isinstance(obj, ModuleType):
            # A module page's own anchor is not one autorefs resolves (no root heading):
            # a module stays inline code; its page is in the reference index.
            return None
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if isinstance(module, str) and isinstance(qualname, str):
            if "<" in qualname or not module.startswith("eskit"):
                return None
            if any(part.startswith("_") and not part.startswith("__")
                   for part in qualname.split(".")):
                return None
            return f"{module}.{qualname}"
        return None

    def _link(self, match: re.Match[str], context: str) -> str:
        short, title, target = match.group(1) == "~", match.group(2), match.group(3).strip()
        shown = target.lstrip(".").rsplit(".", 1)[-1] if short else target.lstrip(".")
        if title:
            shown = title
        if target.endswith("()"):
            target = target[:-2]
        candidates = []
        if target.startswith("eskit."):
            candidates.append(target)
        else:
            # Relative, as Sphinx reads it: the object, then each enclosing scope.
            parts = context.split(".")
            for cut in range(len(parts), 0, -1):
                candidates.append(".".join(parts[:cut]) + "." + target.lstrip("."))
        for candidate in candidates:
            anchor = self._canonical(candidate)
            if anchor is not None:
                # Optional: autorefs links it when the object is on a reference page and
                # leaves plain code (no warning) when it is not, e.g. a private class.
                return f'<autoref identifier="{anchor}" optional><code>{shown}</code></autoref>'
        if target.startswith("eskit.") and _stale(target):
            # A qualified name that no longer exists: a stale docstring, which --strict
            # should stop, as Sphinx's nitpicky mode would.
            _log.warning("%s: docstring refers to %s, which does not exist", context, target)
        return f"`{shown}`"

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is None or ":" not in obj.docstring.value:
            return
        obj.docstring.value = ROLE.sub(lambda m: self._link(m, obj.path), obj.docstring.value)
