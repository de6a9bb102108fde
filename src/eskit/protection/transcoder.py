"""Sealing a batch before it is appended and opening events after they are read (pure).

The decisions of the protection layer, written once for the sync and the async
store (:mod:`eskit.protection.store`, :mod:`eskit.protection.aio`): which
subjects a batch needs keys for (:mod:`eskit.protection.sealing`, the half that
writes), which key ids a page of stored events needs, and the opening (here).
Fetching, creating and unwrapping keys is I/O and stays with the stores.

Opening runs on events as stored, before upcasting, so upcasters see the
plaintext; sealing runs on events in today's shape, after the registry
turned domain events into dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from eskit.errors import DecodingError, InvalidInputError
from eskit.events import Event, EventRegistry, recorded_event
from eskit.protection.envelope import (
    ENVELOPE,
    DataKey,
    Unopened,
    body_of,
    checked_paths,
    group_paths,
    not_decrypting,
    open_body,
    open_group,
)
from eskit.protection.errors import DecryptionError, KeyUnavailableError
from eskit.protection.marking import Marks
from eskit.protection.sealing import (
    MAX_DEPTH,
    METADATA,
    PAYLOAD,
    STORE_SUBJECT,
    Sealing,
    set_path,
    subject_text,
)
from eskit.stores.rows import UndecodableEvent, _UndecodableRow

__all__ = ["ERASED_METADATA", "STORE_SUBJECT", "subject_text"]  # the rest is internal

ERASED_METADATA = "$erased"
"""Metadata key added to an event read with erased fields: the list of their paths."""

_MAX_DEPTH = MAX_DEPTH


def envelopes(data: object, prefix: tuple[str, ...] = (), depth: int = 0
              ) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every envelope in ``data``: ``(key path, body)``, nested dicts included."""
    if type(data) is not dict or depth > _MAX_DEPTH:
        return
    for key, value in data.items():
        if type(value) is dict:
            body = body_of(value)
            if body is not None:
                yield (*prefix, key), body
            else:
                yield from envelopes(value, (*prefix, key), depth + 1)


Found = list[tuple[tuple[str, ...], dict[str, Any]]]
"""The version 1 field envelopes of one event: ``(key path, body)``."""


class Scan:
    """The sealed fields found in a page of events, per event (internal): each event's
    version 2 groups (``None`` when it has none) and version 1 envelopes."""

    __slots__ = ("found", "groups", "ids")

    def __init__(self, found: list[Found], groups: list[list[Any] | None],
                 ids: set[str]) -> None:
        self.found = found
        self.groups = groups
        self.ids = ids


class Transcoder(Sealing):
    """Seals and opens events for one registry, one set of marks (internal)."""

    def __init__(self, registry: EventRegistry, marks: Marks, *, encrypt_payloads: bool,
                 encrypt_metadata: Iterable[str] = ()) -> None:
        self.registry = registry
        self.marks = marks
        self.encrypt_payloads = encrypt_payloads
        if isinstance(encrypt_metadata, str):
            raise InvalidInputError("encrypt_metadata must be a list of metadata keys")
        self.encrypt_metadata = tuple(encrypt_metadata)
        for name in self.encrypt_metadata:
            if type(name) is not str or not name:
                raise InvalidInputError(f"encrypt_metadata keys must be non-empty str: {name!r}")
        self._store_sealed = encrypt_payloads or bool(self.encrypt_metadata)

    # -- opening ---------------------------------------------------------------------------

    @staticmethod
    def payload_key_ids(events: Iterable[Event]) -> set[str]:
        """The key ids of whole-payload and metadata envelopes among ``events``."""
        ids = set()
        for e in events:
            data = e.event_data
            # A whole-payload envelope is a dict of one key: most payloads are not.
            if len(data) == 1 and (body := body_of(data)) is not None:
                ids.add(str(body["k"]))
            if e.metadata:
                ids.update(str(b["k"]) for v in e.metadata.values()
                           if (b := body_of(v)) is not None)
        return ids

    @staticmethod
    def scan(events: Iterable[Event]) -> Scan:
        """The sealed fields of each event (payloads opened first), found once."""
        found: list[Found] = []
        groups: list[list[Any] | None] = []
        ids: set[str] = set()
        for e in events:
            here: Found = []
            data = e.event_data
            sealed = data.get(ENVELOPE) if type(data) is dict else None
            if type(sealed) is list:  # version 2: the groups say where their fields are
                for body in sealed:
                    if type(body) is dict and type(k := body.get("k")) is str:
                        ids.add(k)
                groups.append(sealed)
                found.append(here)
                continue
            groups.append(None)
            # Version 1: a walk. The top level inline (most sealed fields are there): a
            # generator per event cost more than the decryption; nested dicts go to
            # envelopes().
            if type(data) is dict:
                for key, value in data.items():
                    if type(value) is not dict:
                        continue
                    body = body_of(value)
                    if body is not None:
                        here.append(((key,), body))
                        ids.add(str(body["k"]))
                    else:
                        for nested in envelopes(value, (key,), 1):
                            here.append(nested)
                            ids.add(str(nested[1]["k"]))
            found.append(here)
        return Scan(found, groups, ids)

    def open_payloads(self, events: list[Event], keys: Mapping[str, DataKey]) -> list[Event]:
        """``events`` with payload and metadata envelopes opened (fields still sealed)."""
        return [self._open_store_sealed(e, keys) for e in events]

    def _open_store_sealed(self, e: Event, keys: Mapping[str, DataKey]) -> Event:
        data, metadata = e.event_data, e.metadata
        head = e.event_id.bytes
        body = body_of(data)
        if body is not None:
            data = _opened(body, self._store_key(body, keys, e), head, PAYLOAD, e)
            if type(data) is not dict:  # only a holder of the store key could seal one
                raise not_decrypting(PAYLOAD, _where(e), e.position, Unopened(PAYLOAD))
        if metadata and any(body_of(v) is not None for v in metadata.values()):
            metadata = dict(metadata)
            for name, value in metadata.items():
                sealed = body_of(value)
                if sealed is not None:
                    metadata[name] = _opened(
                        sealed, self._store_key(sealed, keys, e), head, METADATA + name, e
                    )
        if data is e.event_data and metadata is e.metadata:
            return e
        return e.reshaped(e.event_type, data, e.schema_version, metadata=metadata)

    @staticmethod
    def _store_key(body: dict[str, Any], keys: Mapping[str, DataKey], e: Event) -> DataKey:
        key = keys.get(str(body["k"]))
        if key is None:  # never erased (erase_subject refuses "$store"): the table was changed
            raise KeyUnavailableError(
                f"the store key {body['k']!r} sealing {_where(e)} is missing from the key store"
            )
        return key

    def open_fields(self, events: list[Event], scan: Scan, keys: Mapping[str, DataKey]
                    ) -> list[Event]:
        """``events`` with each sealed field opened, or redacted where its key is gone."""
        return [
            self._open_one(e, found, groups, keys) if found or groups is not None else e
            for e, found, groups in zip(events, scan.found, scan.groups, strict=True)
        ]

    def _open_one(self, e: Event, found: Found, groups: list[Any] | None,
                  keys: Mapping[str, DataKey]) -> Event:
        data = dict(e.event_data)  # one copy per event: the read's dict may be shared
        erased: list[str] = []
        event_id = e.event_id.int.to_bytes(16)  # UUID.bytes, without its Python frame
        if groups is not None:
            del data[ENVELOPE]
            for body in groups:  # inline, not a call per group: this is the read's hot loop
                paths = group_paths(body)
                if paths is None:
                    raise not_decrypting(ENVELOPE, _where(e), e.position, Unopened(ENVELOPE))
                key = keys.get(body["k"])
                if key is None:
                    if not checked_paths(paths):
                        raise not_decrypting(ENVELOPE, _where(e), e.position, Unopened(ENVELOPE))
                    values = [self.marks.erased_value(e.event_type, path) for path in paths]
                    erased.extend(paths)
                else:
                    try:
                        values = open_group(body, paths, key, event_id)
                    except Unopened as exc:
                        raise not_decrypting(",".join(map(str, paths)), _where(e), e.position,
                                             exc) from exc.__cause__
                for path, value in zip(paths, values, strict=True):
                    if "." not in path:
                        data[path] = value  # over the marker: the field keeps its place
                    else:
                        data = self._put(e, data, path, value)
        for path_keys, body in found:
            path = path_keys[0] if len(path_keys) == 1 else ".".join(path_keys)
            key = keys.get(str(body["k"]))
            if key is None:
                value = self.marks.erased_value(e.event_type, path)
                erased.append(path)
            else:
                try:
                    value = open_body(body, key, event_id, path)
                except Unopened as exc:
                    raise not_decrypting(path, _where(e), e.position, exc) from exc.__cause__
            if len(path_keys) == 1:
                data[path] = value
            else:
                data = set_path(data, path_keys, value)
        return recorded_event(
            e.event_id, e.aggregate_id, e.event_type, data, e.timestamp, e.version, e.position,
            {**e.metadata, ERASED_METADATA: erased} if erased else e.metadata,
            e.schema_version, e.tags,
        )

    @staticmethod
    def _put(e: Event, data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
        """``data`` with ``value`` at the nested ``path`` (over its marker)."""
        try:
            return set_path(data, tuple(path.split(".")), value)
        except (KeyError, TypeError) as exc:  # the marker's dicts were removed
            raise not_decrypting(path, _where(e), e.position, Unopened(path)) from exc

    @staticmethod
    def mentions(event: Event, subject: str) -> bool:
        """Whether a stored event (payload opened) carries a field sealed for ``subject``."""
        data = event.event_data
        groups = data.get(ENVELOPE) if type(data) is dict else None
        if type(groups) is list:
            return any(type(body) is dict and body.get("s") == subject for body in groups)
        return any(body["s"] == subject for _, body in envelopes(data))


class UndecodableSealedRow(_UndecodableRow, DecryptionError):
    """A page read stopped at a sealed field that does not decrypt (internal).

    A :class:`DecryptionError` for readers that raise; readers that pass undecodable
    events (``read_all(on_undecodable=...)``, subscriptions) get the opened events
    before it and a placeholder for it, like any undecodable row, and go on.
    """


def split_at_failure(page: list[Event], error: DecodingError) -> tuple[int, UndecodableEvent]:
    """Where in ``page`` opening failed, and the placeholder for that event."""
    index = next((i for i, e in enumerate(page) if e.position == error.position), 0)
    e = page[index]
    return index, UndecodableEvent(
        e.event_id, e.aggregate_id, e.event_type, e.version, e.position, e.schema_version,
        e.timestamp, error,
    )


def _opened(body: dict[str, Any], key: DataKey, head: bytes, path: str, e: Event) -> Any:
    """The value of a whole-payload or metadata envelope (``head``: the event id's bytes)."""
    try:
        return open_body(body, key, head, path)
    except Unopened as exc:
        raise not_decrypting(path, _where(e), e.position, exc) from exc.__cause__


def _where(e: Event) -> str:
    return (
        f"event {e.event_type!r} at version {e.version} of stream {str(e.aggregate_id)!r} "
        f"(position {e.position})"
    )
