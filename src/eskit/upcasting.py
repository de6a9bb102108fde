"""Schema evolution: read last year's events with this year's code.

Stored events are never rewritten. Instead, every read passes them through the
registry's rules, lazily, so they arrive in today's shape:

* **Aliases** map an old event type name to its new name (a rename).
* **Upcasters** turn the data of schema version *n* of a type into version
  *n + 1*; chains (v1 -> v2 -> v3) apply in order until no upcaster is left.
  They receive the event data as a plain dict and return the new dict.
* **Splits** turn one stored event into several events (an event that did two
  things, later modelled as two). Every reader sees the parts: ``read_stream``,
  ``read_all``, subscriptions, projections and aggregates all go through
  :meth:`UpcastRules.upcast_all`. The parts keep the stored event's version,
  position, timestamp and metadata, and each carries the key
  :data:`SPLIT_KEY` in its metadata (``{"of": stored id, "part": i, "parts": n}``).
  A position still names one stored event, all its parts included: a page of
  stored events is expanded whole, so a batch never ends inside a split, and
  a checkpoint taken after the last part resumes after the whole split.
* **Deprecations** warn, once per type and process, when a deprecated type is read.

Renames resolve first, then upcasters registered under the *new* name run from
the stored schema version, then a split of the resulting type. The upcast event
carries the new type, data and schema version; its id, stream, version,
position, timestamp and metadata are the stored ones.

This module knows events only by their attributes and their
``reshaped`` method (:meth:`eskit.Event.reshaped`): it sits below
:mod:`eskit.events`, whose registry holds the rules, and imports nothing of it.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from eskit.errors import DecodingError, InvalidInputError

__all__ = ["SPLIT_KEY", "EskitDeprecationWarning", "Upcaster", "UpcastRules", "ends_stored_event"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the event data of one schema version into the next version's."""

Splitter = Callable[[dict[str, Any]], list[tuple[str, dict[str, Any]]]]
"""Turns the data of one stored event into several (event type, data) pairs."""

F = TypeVar("F", bound=Callable[..., Any])

_SPLIT_NAMESPACE = uuid.UUID("6f1d3a52-2d0e-4b8e-9a57-7c3f5d1e0b21")

SPLIT_KEY = "eskit.split"
"""The metadata key each part of a split event carries: ``{"of", "part", "parts"}``."""


def ends_stored_event(event: Any) -> bool:
    """Whether a checkpoint may be taken after ``event``: it is not an early split part.

    Every part of a split shares the stored event's position, so a checkpoint at
    that position after an early part would skip the parts after it.
    """
    # An UndecodableEvent has no metadata: it is never a split part.
    metadata = getattr(event, "metadata", None)
    if not metadata:  # the usual case, decided without a lookup
        return True
    split = metadata.get(SPLIT_KEY)
    return type(split) is not dict or split.get("part") == split.get("parts", 1) - 1


def is_later_split_part(event: Any) -> bool:
    """Whether ``event`` is a split part after the first (it repeats the version)."""
    metadata = event.metadata
    split = metadata.get(SPLIT_KEY) if metadata else None
    return type(split) is dict and type(split.get("part")) is int and split["part"] > 0


class EskitDeprecationWarning(UserWarning):
    """A deprecated event type was read. Shown once per type and process."""


class UpcastRules:
    """The aliases, upcasters, splits and deprecations of one registry (pure, no I/O)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.aliases: dict[str, str] = {}
        self.upcasters: dict[tuple[str, int], Upcaster] = {}
        self.splits: dict[str, Splitter] = {}
        self.deprecated: dict[str, str] = {}
        self._warned: set[str] = set()
        self.active = False
        """Whether any rule exists: reads skip all of this when none does."""

    # -- declaring rules -------------------------------------------------------------

    # The registry checks the names before it calls these.

    def add_alias(self, old_name: str, new_name: str) -> None:
        if old_name == new_name:
            raise InvalidInputError(f"an event type cannot alias itself: {old_name!r}")
        with self._lock:
            target = new_name
            seen = {old_name}
            while target in self.aliases:  # follow chains, refuse cycles
                if target in seen:
                    break
                seen.add(target)
                target = self.aliases[target]
            if target in seen:
                raise InvalidInputError(f"alias {old_name!r} -> {new_name!r} makes a cycle")
            existing = self.aliases.get(old_name)
            if existing is not None and existing != new_name:
                raise InvalidInputError(
                    f"{old_name!r} is already an alias of {existing!r}, not {new_name!r}"
                )
            self.aliases[old_name] = new_name
            self.active = True

    def add_upcaster(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        if type(from_version) is not int or from_version < 1:
            raise InvalidInputError(f"from_version must be an int >= 1, got {from_version!r}")
        if not callable(upcaster):
            raise InvalidInputError("an upcaster must be callable")
        with self._lock:
            key = (event_type, from_version)
            if key in self.upcasters and self.upcasters[key] is not upcaster:
                raise InvalidInputError(
                    f"{event_type!r} already has an upcaster from version {from_version}"
                )
            self.upcasters[key] = upcaster
            self.active = True

    def add_split(self, event_type: str, splitter: Splitter) -> None:
        if not callable(splitter):
            raise InvalidInputError("a splitter must be callable")
        with self._lock:
            self.splits[event_type] = splitter
            self.active = True

    def remove_split(self, event_type: str) -> None:
        """Forget the split of ``event_type`` (for tests that add one for a while)."""
        with self._lock:
            self.splits.pop(event_type, None)
            self.active = bool(self.aliases or self.upcasters or self.splits or self.deprecated)

    def deprecate(self, event_type: str, reason: str = "") -> None:
        with self._lock:
            self.deprecated[event_type] = reason
            self.active = True

    # -- applying them ---------------------------------------------------------------

    def current_name(self, event_type: str) -> str:
        seen = 0
        while event_type in self.aliases and seen < 100:
            event_type = self.aliases[event_type]
            seen += 1
        return event_type

    def upcast(self, event: Any) -> Any:
        """The event in today's shape (the same object when no rule applies)."""
        stored_type = event.event_type
        if stored_type in self.deprecated:
            self._warn_deprecated(stored_type)
        name = self.current_name(stored_type) if stored_type in self.aliases else stored_type
        version = event.schema_version
        upcaster = self.upcasters.get((name, version))
        if upcaster is None and name == stored_type:
            return event
        data = event.event_data
        while upcaster is not None:
            try:
                data = upcaster(dict(data))
            except Exception as exc:
                raise DecodingError(
                    f"upcasting event {stored_type!r} from schema version {version} failed at "
                    f"version {event.version} of stream {str(event.aggregate_id)!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(data, dict):
                raise DecodingError(
                    f"the upcaster of {name!r} from schema version {version} returned "
                    f"{type(data).__name__}, not a dict"
                )
            version += 1
            upcaster = self.upcasters.get((name, version))
        return event.reshaped(name, data, version)

    def upcast_all(self, events: list[Any], current_version: Callable[[str], int]) -> list[Any]:
        """Stored events in today's shape, splits expanded in place (the one read path).

        The same list when there are no rules. ``current_version`` gives the
        schema version of each split part's type.
        """
        if not self.active:
            return events
        if not self.splits:
            return [self.upcast(e) for e in events]
        out: list[Any] = []
        for stored in events:
            out.extend(self.expand(self.upcast(stored), current_version))
        return out

    def expand(self, event: Any, current_version: Callable[[str], int]) -> list[Any]:
        """The events one (upcast) stored event stands for: itself, or its split.

        An event that already is a split part is returned as it is, so expanding
        twice changes nothing.
        """
        splitter = self.splits.get(event.event_type)
        if splitter is None or (event.metadata and SPLIT_KEY in event.metadata):
            return [event]
        try:
            parts = splitter(dict(event.event_data))
        except Exception as exc:
            raise DecodingError(
                f"splitting event {event.event_type!r} at version {event.version} of stream "
                f"{str(event.aggregate_id)!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        where = (
            f"splitting event {event.event_type!r} at version {event.version} of stream "
            f"{str(event.aggregate_id)!r}"
        )
        if not isinstance(parts, list) or not parts:
            # An empty split would leave a hole in the stream's versions: an aggregate
            # could no longer count its events, nor a reader name where it stopped.
            raise DecodingError(f"{where}: the splitter must return a non-empty list of parts")
        expanded = []
        for i, part in enumerate(parts):
            if not (isinstance(part, tuple | list) and len(part) == 2
                    and type(part[0]) is str and isinstance(part[1], dict)):
                raise DecodingError(
                    f"{where}: part {i} is not an (event type, data dict) pair: {part!r}"
                )
            event_type, data = part
            # The first part keeps the stored id; the others get ids derived from it, the
            # same on every read, so handlers can still use them as idempotency keys.
            event_id = event.event_id if i == 0 else uuid.uuid5(
                _SPLIT_NAMESPACE, f"{event.event_id}/{i}"
            )
            metadata = {
                **event.metadata,
                SPLIT_KEY: {"of": str(event.event_id), "part": i, "parts": len(parts)},
            }
            expanded.append(event.reshaped(
                event_type, data, current_version(event_type), event_id=event_id,
                metadata=metadata,
            ))
        return expanded

    def _warn_deprecated(self, event_type: str) -> None:
        if event_type in self._warned:
            return
        with self._lock:
            if event_type in self._warned:
                return
            self._warned.add(event_type)
        reason = self.deprecated[event_type]
        warnings.warn(
            f"event type {event_type!r} is deprecated" + (f": {reason}" if reason else ""),
            EskitDeprecationWarning,
            stacklevel=4,
        )
