"""Follow one conversation through the log: the events of a correlation id, as a tree.

Pure: it reads the events it is given (from :meth:`~eskit.EventStore.read_all`,
for example) and keeps only the matching ones, so memory grows with the
conversation, not with the log. An event belongs to the conversation of ``id``
when ``id`` is its event id or its ``correlation_id`` (see :mod:`eskit.context`).
:func:`causation_tree` nests each event under the event that caused it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from uuid import UUID

from eskit.context import CAUSATION_ID, CORRELATION_ID
from eskit.events import Event

__all__ = ["causation_tree", "conversation"]


def conversation(events: Iterable[Event], conversation_id: str | UUID,
                 on_event: Callable[[Event], object] | None = None) -> list[Event]:
    """The events of ``conversation_id``, in the order given (global order from read_all).

    ``on_event`` is called with every event read (for a progress bar).
    """
    wanted = str(conversation_id)
    found = []
    for event in events:
        if on_event is not None:
            on_event(event)
        if str(event.event_id) == wanted or event.metadata.get(CORRELATION_ID) == wanted:
            found.append(event)
    return found


def causation_tree(events: list[Event]) -> list[tuple[int, Event]]:
    """``events`` as (depth, event) in tree order: each under the event that caused it.

    An event whose cause is not among ``events`` is a root. Children keep their
    order; a cycle (which eskit never writes) cannot loop: each event appears once.
    """
    by_id = {str(e.event_id): e for e in events}
    children: dict[str, list[Event]] = {}
    roots = []
    for event in events:
        cause = event.metadata.get(CAUSATION_ID)
        if isinstance(cause, str) and cause in by_id and cause != str(event.event_id):
            children.setdefault(cause, []).append(event)
        else:
            roots.append(event)
    out: list[tuple[int, Event]] = []
    seen: set[str] = set()
    stack = [(0, e) for e in reversed(roots)]
    while stack:  # iterative: a 10,000-step chain does not hit the recursion limit
        depth, event = stack.pop()
        key = str(event.event_id)
        if key in seen:
            continue
        seen.add(key)
        out.append((depth, event))
        stack.extend((depth + 1, child) for child in reversed(children.get(key, [])))
    # Events only reachable through a cycle are listed as roots at the end.
    out.extend((0, e) for e in events if str(e.event_id) not in seen)
    return out
