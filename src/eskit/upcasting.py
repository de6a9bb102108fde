"""Schema evolution: read last year's events with this year's code.

Stored events are never rewritten. Instead, every read passes them through the
registry's rules, lazily, so they arrive in today's shape:

* **Aliases** map an old event type name to its new name (a rename).
* **Upcasters** turn the data of schema version *n* of a type into version
  *n + 1*; chains (v1 -> v2 -> v3) apply in order until no upcaster is left.
  They receive the event data as a plain dict and return the new dict.
* **Splits** turn one stored event into several domain events (an event that
  did two things, later modelled as two). A split keeps the stored event's
  version and position; it is applied where events become domain objects
  (aggregates, :meth:`EventRegistry.expand`), never to the raw global order, so
  checkpoints stay one per stored event.
* **Deprecations** warn, once per type and process, when a deprecated type is read.

Renames resolve first, then upcasters registered under the *new* name run from
the stored schema version. The upcast event carries the new type, data and
schema version; its id, stream, version, position, timestamp and metadata are
the stored ones.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import eskit.events as events_module  # circular on purpose: used only at call time
from eskit.errors import DecodingError, InvalidInputError

__all__ = ["EskitDeprecationWarning", "Upcaster", "UpcastRules"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the event data of one schema version into the next version's."""

Splitter = Callable[[dict[str, Any]], list[tuple[str, dict[str, Any]]]]
"""Turns the data of one stored event into several (event type, data) pairs."""

F = TypeVar("F", bound=Callable[..., Any])

_SPLIT_NAMESPACE = uuid.UUID("6f1d3a52-2d0e-4b8e-9a57-7c3f5d1e0b21")


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

    def add_alias(self, old_name: str, new_name: str) -> None:
        events_module.validate_event_type(old_name)
        events_module.validate_event_type(new_name)
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
        events_module.validate_event_type(event_type)
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
        return events_module.recorded_event(
            event.event_id, event.aggregate_id, name, data, event.timestamp, event.version,
            event.position, event.metadata, version,
        )

    def upcast_all(self, events: list[Any]) -> list[Any]:
        if not self.active:
            return events
        return [self.upcast(e) for e in events]

    def expand(self, event: Any, current_version: Callable[[str], int]) -> list[Any]:
        """The domain events one (upcast) stored event stands for: itself, or its split."""
        splitter = self.splits.get(event.event_type)
        if splitter is None:
            return [event]
        try:
            parts = splitter(dict(event.event_data))
        except Exception as exc:
            raise DecodingError(
                f"splitting event {event.event_type!r} at version {event.version} of stream "
                f"{str(event.aggregate_id)!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        expanded = []
        for i, (event_type, data) in enumerate(parts):
            # The first part keeps the stored id; the others get ids derived from it, the
            # same on every read, so handlers can still use them as idempotency keys.
            event_id = event.event_id if i == 0 else uuid.uuid5(
                _SPLIT_NAMESPACE, f"{event.event_id}/{i}"
            )
            expanded.append(events_module.recorded_event(
                event_id, event.aggregate_id, event_type, data, event.timestamp, event.version,
                event.position, event.metadata, current_version(event_type),
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
