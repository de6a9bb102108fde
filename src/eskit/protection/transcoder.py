"""Sealing a batch before it is appended and opening events after they are read (pure).

The decisions of the protection layer, written once for the sync and the async
store (:mod:`eskit.protection.store`, :mod:`eskit.protection.aio`): which
subjects a batch needs keys for, which key ids a page of stored events needs,
and the sealing and opening themselves. Fetching, creating and unwrapping
keys is I/O and stays with the stores.

Opening runs on events as stored, before upcasting, so upcasters see the
plaintext; sealing runs on events in today's shape, after the registry
turned domain events into dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from uuid import UUID

from eskit import codec
from eskit.errors import DecodingError, InvalidInputError
from eskit.events import Event, EventRegistry, NewEvent, recorded_event
from eskit.protection.envelope import (
    ENVELOPE,
    DataKey,
    Unopened,
    body_of,
    checked_paths,
    group_paths,
    is_reserved,
    not_decrypting,
    open_body,
    open_group,
    seal,
    seal_group,
)
from eskit.protection.errors import DecryptionError, KeyUnavailableError
from eskit.protection.marking import FieldMark, Marks
from eskit.stores.model import PendingEvent
from eskit.stores.multi import PreparedAppend
from eskit.stores.rows import UndecodableEvent, _UndecodableRow

__all__ = ["ERASED_METADATA", "STORE_SUBJECT"]  # the rest is internal

ERASED_METADATA = "$erased"
"""Metadata key added to an event read with erased fields: the list of their paths."""

STORE_SUBJECT = "$store"
"""The reserved subject whose key seals whole payloads (``encrypt_payloads=True``)."""

_PAYLOAD = ""  # the path of a whole-payload envelope
_METADATA = "$metadata."  # the path prefix of a metadata envelope
_MAX_DEPTH = 64

Plan = list[list[tuple[str, list[FieldMark]]]]
"""Per event of a batch, its subjects (in the order their first field comes) and the
marked fields present of each: one group, sealed together, per subject."""


def subject_text(value: object, what: str) -> str:
    """A subject id as stored: the ``str`` of a str, UUID or int, checked."""
    if type(value) is str and value and value[0] != "$":  # the common case, at once
        return value
    if type(value) is bool or not isinstance(value, str | UUID | int):
        raise InvalidInputError(
            f"{what} must be a str, UUID or int subject id, got {type(value).__name__}"
        )
    text = str(value)
    if not text:
        raise InvalidInputError(f"{what} is empty: a subject id must not be")
    if text.startswith("$"):
        raise InvalidInputError(f"{what} {text!r}: subject ids starting with '$' are reserved")
    return text


def _get(data: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[bool, Any]:
    value: Any = data
    for key in keys:
        if type(value) is not dict or key not in value:
            return False, None
        value = value[key]
    return True, value


def _set(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``data`` with ``value`` at ``keys``, copying each dict on the path (``data`` unchanged)."""
    top = dict(data)
    node = top
    for key in keys[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    node[keys[-1]] = value
    return top


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


def _holds_reserved(data: object, depth: int = 0) -> bool:
    """Whether ``data`` holds, at any depth, a value shaped like what the store writes
    (an envelope or a field's marker)."""
    if type(data) is not dict or depth > _MAX_DEPTH:
        return False
    for value in data.values():
        if type(value) is dict and (is_reserved(value) or _holds_reserved(value, depth + 1)):
            return True
    return False


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


class Transcoder:
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

    # -- sealing ---------------------------------------------------------------------------

    def plan(self, batch: list[PendingEvent]) -> Plan:
        """The subjects of each event and their marked fields; raises on bad input."""
        plan: Plan = []
        for index, p in enumerate(batch):
            data = p.event_data
            if ENVELOPE in data or _holds_reserved(data):
                raise InvalidInputError(
                    f"event {index} of the batch ({p.event_type!r}) already holds a sealed "
                    f"field or the reserved key '$pd': append plaintext, the store seals it"
                )
            groups: dict[str, list[FieldMark]] = {}
            for mark in self.marks.for_type(p.event_type):
                if len(mark.keys) == 1:
                    if mark.path not in data:
                        continue
                elif not _get(data, mark.keys)[0]:
                    continue
                subject = data.get(mark.subject_field)
                if subject is None:
                    raise InvalidInputError(
                        f"event {index} of the batch ({p.event_type!r}): personal-data field "
                        f"{mark.path!r} belongs to the subject in field {mark.subject_field!r}, "
                        "which is missing"
                    )
                text = subject_text(
                    subject, f"event {index} of the batch ({p.event_type!r}) field "
                    f"{mark.subject_field!r}",
                )
                marks = groups.get(text)
                if marks is None:
                    groups[text] = [mark]
                else:
                    marks.append(mark)
            plan.append(list(groups.items()))
        return plan

    def plan_many(self, prepared: list[PreparedAppend]) -> list[Plan]:
        """:meth:`plan` for each stream of an ``append_many`` call."""
        plans = []
        for index, a in enumerate(prepared):
            try:
                plans.append(self.plan(a.batch))
            except InvalidInputError as exc:
                raise InvalidInputError(f"appends[{index}]: {exc}") from None
        return plans

    def subjects_many(self, plans: list[Plan]) -> set[str]:
        """The subjects a whole ``append_many`` call needs keys for (one look-up)."""
        needed: set[str] = set()
        for plan in plans:
            needed |= self.subjects(plan)
        return needed

    def seal_many(self, prepared: list[PreparedAppend], plans: list[Plan],
                  keys: Mapping[str, DataKey], *, max_event_bytes: int
                  ) -> list[PreparedAppend]:
        """:meth:`seal_pending` for each stream of an ``append_many`` call: each event
        encoded once more, sealed, and not checked again."""
        sealed = []
        for index, (a, plan) in enumerate(zip(prepared, plans, strict=True)):
            try:
                batch = self.seal_pending(a.batch, plan, keys, max_event_bytes=max_event_bytes)
            except InvalidInputError as exc:
                raise InvalidInputError(f"appends[{index}]: {exc}") from None
            sealed.append(PreparedAppend(a.stream_id, a.stream, a.expected, batch))
        return sealed

    def subjects(self, plan: Plan) -> set[str]:
        needed = {subject for groups in plan for subject, _ in groups}
        if self._store_sealed:
            needed.add(STORE_SUBJECT)
        return needed

    def seal(self, batch: list[PendingEvent], plan: Plan, keys: Mapping[str, DataKey]
             ) -> list[NewEvent]:
        """The batch with every marked field (and the payload, if asked) sealed."""
        return [NewEvent(  # DCB tags pass through unsealed: they are indexed
            p.event_type, data, metadata, p.event_id, p.timestamp, p.schema_version, p.tags,
        ) for p, (data, metadata) in zip(batch, self._sealed_parts(batch, plan, keys),
                                         strict=True)]

    def seal_pending(self, batch: list[PendingEvent], plan: Plan, keys: Mapping[str, DataKey],
                     *, max_event_bytes: int) -> list[PendingEvent]:
        """:meth:`seal`, encoded for the wrapped store's ``_append_prepared``: the
        batch was validated once, as plaintext; only the sealed form is encoded
        again (and checked against the size limit, which the sealed form meets or not)."""
        naive = self.registry.naive_datetimes
        pending = []
        for index, (p, (data, metadata)) in enumerate(
                zip(batch, self._sealed_parts(batch, plan, keys), strict=True)):
            encoded = codec.encode(data, naive_datetimes=naive)
            meta = p.metadata if metadata is p.metadata_dict else codec.encode(
                metadata, naive_datetimes=naive)
            if len(encoded) + len(meta) > max_event_bytes:
                raise InvalidInputError(
                    f"event {index} of the batch ({p.event_type!r}) encodes to "
                    f"{len(encoded) + len(meta)} bytes once sealed, over the limit of "
                    f"{max_event_bytes}"
                )
            pending.append(PendingEvent(
                p.event_id, p.event_type, encoded, meta, p.timestamp, p.schema_version,
                data, metadata, p.tags,
            ))
        return pending

    def _sealed_parts(self, batch: list[PendingEvent], plan: Plan, keys: Mapping[str, DataKey]
                      ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Per event: its data and metadata with each subject's marked fields sealed
        together (one group each, see :mod:`eskit.protection.envelope`)."""
        naive = self.registry.naive_datetimes
        for p, groups in zip(batch, plan, strict=True):
            data = p.event_data
            if groups:
                data = dict(data)  # the caller's dict is never changed
                event_id = p.event_id.bytes
                bodies = []
                for index, (subject, marks) in enumerate(groups):
                    values, paths = [], []
                    for mark in marks:
                        if len(mark.keys) == 1:
                            values.append(data[mark.path])
                            data[mark.path] = {ENVELOPE: index}  # the field keeps its place
                        else:
                            values.append(_get(data, mark.keys)[1])
                            data = _set(data, mark.keys, {ENVELOPE: index})
                        paths.append(mark.path)
                    bodies.append(seal_group(values, paths, keys[subject], event_id,
                                             naive=naive))
                data[ENVELOPE] = bodies
            if self.encrypt_payloads:
                data = seal(data, keys[STORE_SUBJECT], p.event_id, _PAYLOAD, naive=naive)
            metadata = p.metadata_dict
            for name in self.encrypt_metadata:
                if name in metadata:
                    metadata = {**metadata, name: seal(
                        metadata[name], keys[STORE_SUBJECT], p.event_id, _METADATA + name,
                        naive=naive,
                    )}
            yield data, metadata

    # -- opening ---------------------------------------------------------------------------

    @staticmethod
    def payload_key_ids(events: Iterable[Event]) -> set[str]:
        """The key ids of whole-payload and metadata envelopes among ``events``."""
        ids = set()
        for e in events:
            body = body_of(e.event_data)
            if body is not None:
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
            data = _opened(body, self._store_key(body, keys, e), head, _PAYLOAD, e)
            if type(data) is not dict:  # only a holder of the store key could seal one
                raise not_decrypting(_PAYLOAD, _where(e), e.position, Unopened(_PAYLOAD))
        if metadata and any(body_of(v) is not None for v in metadata.values()):
            metadata = dict(metadata)
            for name, value in metadata.items():
                sealed = body_of(value)
                if sealed is not None:
                    metadata[name] = _opened(
                        sealed, self._store_key(sealed, keys, e), head, _METADATA + name, e
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
        event_id = e.event_id.bytes
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
                data = _set(data, path_keys, value)
        return recorded_event(
            e.event_id, e.aggregate_id, e.event_type, data, e.timestamp, e.version, e.position,
            {**e.metadata, ERASED_METADATA: erased} if erased else e.metadata,
            e.schema_version, e.tags,
        )

    @staticmethod
    def _put(e: Event, data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
        """``data`` with ``value`` at the nested ``path`` (over its marker)."""
        try:
            return _set(data, tuple(path.split(".")), value)
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
