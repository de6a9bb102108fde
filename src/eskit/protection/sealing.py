"""Sealing a batch before it is appended (pure, no I/O; the half of the transcoder that writes).

Written once for the sync and the async store. :meth:`Sealing.plan` decides,
before any I/O, which subjects each event's marked fields belong to and checks
the batch; the store fetches or creates those subjects' keys; then the batch is
sealed, one group per subject per event (see :mod:`eskit.protection.envelope`).

Two ways out, with the same bytes: :meth:`Sealing.seal_pending` for the plain
stores, which take the batch encoded (the plaintext is walked by the codec once,
in :meth:`Sealing.plan`, and the sealed payload is spliced from that tree: each
event is encoded once), and :meth:`Sealing.seal` for a wrapper with an append of
its own, which takes events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from eskit import codec
from eskit.errors import EncodingError, InvalidInputError
from eskit.events import EventRegistry, NewEvent
from eskit.protection.envelope import ENVELOPE, DataKey, is_reserved, seal, seal_bytes, seal_group
from eskit.protection.marking import FieldMark, Marks
from eskit.stores.model import PendingEvent
from eskit.stores.multi import PreparedAppend

__all__ = ["STORE_SUBJECT"]  # the rest is internal

STORE_SUBJECT = "$store"
"""The reserved subject whose key seals whole payloads (``encrypt_payloads=True``)."""

PAYLOAD = ""  # the path of a whole-payload envelope
METADATA = "$metadata."  # the path prefix of a metadata envelope
MAX_DEPTH = 64

Groups = list[tuple[str, list[FieldMark]]]
"""One event's subjects (in the order their first field comes) and the marked fields
present of each: one group, sealed together, per subject."""


class Plan:
    """What sealing a batch needs, decided before any I/O (internal): per event its
    groups, and (for :meth:`Sealing.seal_pending`) its plaintext's codec tree."""

    __slots__ = ("groups", "trees")

    def __init__(self, groups: list[Groups], trees: list[Any] | None) -> None:
        self.groups = groups
        self.trees = trees


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


def get_path(data: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[bool, Any]:
    value: Any = data
    for key in keys:
        if type(value) is not dict or key not in value:
            return False, None
        value = value[key]
    return True, value


def set_path(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``data`` with ``value`` at ``keys``, copying each dict on the path (``data`` unchanged)."""
    top = dict(data)
    node = top
    for key in keys[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    node[keys[-1]] = value
    return top


def _holds_reserved(data: object, depth: int = 0) -> bool:
    """Whether ``data`` holds, at any depth, a value shaped like what the store writes
    (an envelope or a field's marker)."""
    if type(data) is not dict or depth > MAX_DEPTH:
        return False
    for value in data.values():
        if type(value) is dict and (is_reserved(value) or _holds_reserved(value, depth + 1)):
            return True
    return False


def _tree_node(tree: Any, keys: tuple[str, ...]) -> bool:
    """Whether the codec tree holds plain dicts all along ``keys`` (a dict holding the
    codec's tag key, or keys that are not str, is written wrapped: not spliced)."""
    node = tree
    for key in keys[:-1]:
        node = node.get(key) if type(node) is dict and codec.TAG not in node else None
    return type(node) is dict and codec.TAG not in node and keys[-1] in node


class Sealing:
    """The sealing half of :class:`~eskit.protection.transcoder.Transcoder` (internal)."""

    registry: EventRegistry
    marks: Marks
    encrypt_payloads: bool
    encrypt_metadata: tuple[str, ...]
    _store_sealed: bool

    def plan(self, batch: list[PendingEvent], *, trees: bool = False) -> Plan:
        """The groups of each event; raises on bad input. ``trees=True``: also encode
        each payload to its codec tree (the batch was prepared with ``encode_data=False``),
        refusing what the codec refuses, as preparing it would have."""
        naive = self.registry.naive_datetimes
        groups: list[Groups] = []
        encoded: list[Any] | None = [] if trees else None
        for index, p in enumerate(batch):
            data = p.event_data
            if ENVELOPE in data or _holds_reserved(data):
                raise InvalidInputError(
                    f"event {index} of the batch ({p.event_type!r}) already holds a sealed "
                    f"field or the reserved key '$pd': append plaintext, the store seals it"
                )
            groups.append(self._groups(index, p))
            if encoded is not None:
                try:
                    tree = codec.encode_tree(data)
                    if not naive and codec.may_hold_naive(codec.dump_tree(tree)):
                        codec.refuse_naive(data)
                except EncodingError as exc:
                    raise EncodingError(f"event {index} of the batch: {exc.bare_message}",
                                        path=exc.path) from None
                encoded.append(tree)
        return Plan(groups, encoded)

    def _groups(self, index: int, p: PendingEvent) -> Groups:
        data = p.event_data
        groups: dict[str, list[FieldMark]] = {}
        for mark in self.marks.for_type(p.event_type):
            if len(mark.keys) == 1:
                if mark.path not in data:
                    continue
            elif not get_path(data, mark.keys)[0]:
                continue
            subject = data.get(mark.subject_field)
            if subject is None:
                raise InvalidInputError(
                    f"event {index} of the batch ({p.event_type!r}): personal-data field "
                    f"{mark.path!r} belongs to the subject in field {mark.subject_field!r}, "
                    "which is missing"
                )
            text = subject_text(subject, f"event {index} of the batch ({p.event_type!r}) "
                                         f"field {mark.subject_field!r}")
            marks = groups.get(text)
            if marks is None:
                groups[text] = [mark]
            else:
                marks.append(mark)
        return list(groups.items())

    def plan_many(self, prepared: list[PreparedAppend], *, trees: bool = False) -> list[Plan]:
        """:meth:`plan` for each stream of an ``append_many`` call."""
        plans = []
        for index, a in enumerate(prepared):
            try:
                plans.append(self.plan(a.batch, trees=trees))
            except EncodingError as exc:
                raise EncodingError(f"appends[{index}]: {exc.bare_message}",
                                    path=exc.path) from None
            except InvalidInputError as exc:
                raise InvalidInputError(f"appends[{index}]: {exc}") from None
        return plans

    def subjects(self, plan: Plan) -> set[str]:
        needed = {subject for groups in plan.groups for subject, _ in groups}
        if self._store_sealed:
            needed.add(STORE_SUBJECT)
        return needed

    def subjects_many(self, plans: list[Plan]) -> set[str]:
        """The subjects a whole ``append_many`` call needs keys for (one look-up)."""
        needed: set[str] = set()
        for plan in plans:
            needed |= self.subjects(plan)
        return needed

    # -- events, for a wrapper with its own append -----------------------------------------

    def seal(self, batch: list[PendingEvent], plan: Plan, keys: Mapping[str, DataKey]
             ) -> list[NewEvent]:
        """The batch with every marked field (and the payload, if asked) sealed."""
        return [NewEvent(  # DCB tags pass through unsealed: they are indexed
            p.event_type, self._payload(p, groups, keys), self._metadata(p, keys), p.event_id,
            p.timestamp, p.schema_version, p.tags,
        ) for p, groups in zip(batch, plan.groups, strict=True)]

    def _payload(self, p: PendingEvent, groups: Groups, keys: Mapping[str, DataKey]
                 ) -> dict[str, Any]:
        data = self._grouped(p, groups, keys)
        if self.encrypt_payloads:
            naive = self.registry.naive_datetimes
            data = seal(data, keys[STORE_SUBJECT], p.event_id, PAYLOAD, naive=naive)
        return data

    def _grouped(self, p: PendingEvent, groups: Groups, keys: Mapping[str, DataKey]
                 ) -> dict[str, Any]:
        """The event's data with each subject's fields sealed in one group."""
        data = p.event_data
        if not groups:
            return data
        naive = self.registry.naive_datetimes
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
                    values.append(get_path(data, mark.keys)[1])
                    data = set_path(data, mark.keys, {ENVELOPE: index})
                paths.append(mark.path)
            plaintext = codec.encode(values, naive_datetimes=naive)
            bodies.append(seal_group(plaintext, paths, keys[subject], event_id))
        data[ENVELOPE] = bodies
        return data

    def _metadata(self, p: PendingEvent, keys: Mapping[str, DataKey]) -> dict[str, Any]:
        metadata = p.metadata_dict
        for name in self.encrypt_metadata:
            if name in metadata:
                metadata = {**metadata, name: seal(
                    metadata[name], keys[STORE_SUBJECT], p.event_id, METADATA + name,
                    naive=self.registry.naive_datetimes,
                )}
        return metadata

    # -- encoded, for the plain stores ---------------------------------------------------------

    def seal_pending(self, batch: list[PendingEvent], plan: Plan, keys: Mapping[str, DataKey],
                     *, max_event_bytes: int) -> list[PendingEvent]:
        """:meth:`seal`, encoded for the wrapped store's ``_append_prepared``: the same
        bytes, each payload spliced from its plaintext's tree (``plan(trees=True)``) and
        dumped once, and checked against the size limit once sealed."""
        if plan.trees is None:
            raise ValueError("seal_pending needs a plan made with trees=True")
        pending = []
        for index, (p, groups, tree) in enumerate(
                zip(batch, plan.groups, plan.trees, strict=True)):
            sealed = self._spliced(p, groups, tree, keys)
            if self.encrypt_payloads:
                sealed = seal_bytes(codec.dump_tree(sealed), keys[STORE_SUBJECT], p.event_id,
                                    PAYLOAD)
            encoded = codec.dump_tree(sealed)
            metadata = self._metadata(p, keys)
            meta = p.metadata if metadata is p.metadata_dict else codec.encode(
                metadata, naive_datetimes=self.registry.naive_datetimes)
            if len(encoded) + len(meta) > max_event_bytes:
                raise InvalidInputError(
                    f"event {index} of the batch ({p.event_type!r}) encodes to "
                    f"{len(encoded) + len(meta)} bytes once sealed, over the limit of "
                    f"{max_event_bytes}"
                )
            pending.append(PendingEvent(
                p.event_id, p.event_type, encoded, meta, p.timestamp, p.schema_version,
                p.event_data, metadata, p.tags,
            ))
        return pending

    def _spliced(self, p: PendingEvent, groups: Groups, tree: Any,
                 keys: Mapping[str, DataKey]) -> Any:
        """The sealed payload's codec tree, from the plaintext's: :meth:`_grouped` without
        walking the payload again (the groups and markers are plain JSON already)."""
        if not groups:
            return tree
        if not all(_tree_node(tree, mark.keys) for _, marks in groups for mark in marks):
            # A dict on a marked path is written wrapped (it holds the codec's tag key,
            # or keys that are not str): seal the dicts and walk them, same bytes.
            return codec.encode_tree(self._grouped(p, groups, keys))
        out = dict(tree)
        event_id = p.event_id.bytes
        bodies = []
        for index, (subject, marks) in enumerate(groups):
            values, paths = [], []
            for mark in marks:
                if len(mark.keys) == 1:
                    values.append(out[mark.path])
                    out[mark.path] = {ENVELOPE: index}
                else:
                    values.append(get_path(out, mark.keys)[1])
                    out = set_path(out, mark.keys, {ENVELOPE: index})
                paths.append(mark.path)
            bodies.append(seal_group(codec.dump_tree(values), paths, keys[subject], event_id))
        out[ENVELOPE] = bodies
        return out

    def seal_many(self, prepared: list[PreparedAppend], plans: list[Plan],
                  keys: Mapping[str, DataKey], *, max_event_bytes: int
                  ) -> list[PreparedAppend]:
        """:meth:`seal_pending` for each stream of an ``append_many`` call."""
        sealed = []
        for index, (a, plan) in enumerate(zip(prepared, plans, strict=True)):
            try:
                batch = self.seal_pending(a.batch, plan, keys, max_event_bytes=max_event_bytes)
            except InvalidInputError as exc:
                raise InvalidInputError(f"appends[{index}]: {exc}") from None
            sealed.append(PreparedAppend(a.stream_id, a.stream, a.expected, batch))
        return sealed
