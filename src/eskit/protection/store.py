"""The protected event store: seals personal data before append, opens it on read.

:func:`protect` wraps any eskit store (memory, SQLite, PostgreSQL) in a
:class:`ProtectedEventStore` with the same API. The wrapped store's tables are
not changed: sealed fields are ordinary JSON values in the payload, and the
subjects' keys live in a table of their own (:mod:`eskit.protection.keystore`).

Guaranteed:

* every field marked as personal data (see :mod:`eskit.protection.marking`) is
  encrypted before the append reaches the store: its plaintext is never
  written to the event tables;
* reads (:meth:`~eskit.EventStore.read_stream`, ``read_all``, subscriptions,
  repositories) return the plaintext, or, once the subject is erased, the
  field's redacted value, with every other field, the version, position, id
  and timestamp unchanged (``metadata["$erased"]`` lists the redacted paths);
* a changed ciphertext raises :class:`~eskit.protection.DecryptionError`;
* idempotent retries still work: sealing the same event again gives the same
  bytes.

Not guaranteed: that values *derived* from personal data elsewhere (read
models, snapshots taken before the erasure, logs, exports) are erased; the
erasure deletes the snapshots of the streams involved and records a
``SubjectErased`` event for projections to act on, the rest is the
application's. Erasure and export read the whole store (in pages, in bounded
memory): their cost grows with the store, not with the subject.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime

from eskit.dcb import AppendCondition, check_condition
from eskit.errors import DecodingError, InvalidInputError
from eskit.events import Event, StreamId
from eskit.protection import subjects
from eskit.protection.envelope import DataKey
from eskit.protection.erasure import Erasure, checked_subject
from eskit.protection.keys import (
    KeyCache,
    KeyProvider,
    LocalKeyProvider,
    UnwrapCache,
    WrappedKey,
    new_wrapped_key,
)
from eskit.protection.keystore import CountsKeyChanges, InMemorySubjectKeyStore, SubjectKeyStore
from eskit.protection.marking import Marks, PersonalFields
from eskit.protection.snapshots import SealedSnapshotStore
from eskit.protection.transcoder import (
    STORE_SUBJECT,
    Transcoder,
    UndecodableSealedRow,
    split_at_failure,
)
from eskit.snapshots import SnapshotStore
from eskit.stores.arguments import check_expected, prepare_batch, stream_key
from eskit.stores.base import EventStore
from eskit.stores.model import (
    ANY,
    AppendInput,
    AppendResult,
    Expected,
    PendingEvent,
    StreamAppend,
    StreamInfo,
)
from eskit.stores.multi import prepare_appends
from eskit.stores.rows import _UndecodableRow
from eskit.subscription import Waiter

__all__ = ["ProtectedEventStore", "protect", "subject_key_store_beside"]  # and internal helpers

REWRAP_BATCH = 500


def subject_key_store_beside(store: EventStore) -> SubjectKeyStore:
    """The default key store for ``store``: a table in its own database, or memory.

    SQLite file: ``eskit_subject_keys`` in the same file; PostgreSQL (a store
    with its own pool): the same table in the store's schema; the in-memory
    store and SQLite ``:memory:``: an :class:`InMemorySubjectKeyStore` (the
    keys die with the process, like the events).
    """
    from eskit.stores.memory import InMemoryEventStore
    from eskit.stores.sqlite import SQLiteEventStore

    if isinstance(store, InMemoryEventStore):
        return InMemorySubjectKeyStore()
    if isinstance(store, SQLiteEventStore):
        if store.path == ":memory:" or store.path.startswith("file::memory:"):
            return InMemorySubjectKeyStore()
        from eskit.protection.sqlite_keys import SQLiteSubjectKeyStore

        return SQLiteSubjectKeyStore(store.path)
    loaded = sys.modules.get("eskit.stores.postgres")
    if loaded is not None and isinstance(store, loaded.PostgresEventStore):
        if store.pool is None:
            raise InvalidInputError(
                "a PostgreSQL store without its own pool: pass keys=PostgresSubjectKeyStore(dsn, "
                "schema=...)"
            )
        from eskit.protection.postgres_keys import PostgresSubjectKeyStore

        return PostgresSubjectKeyStore(store.pool.conninfo, schema=store.schema)
    raise InvalidInputError(
        f"no default subject key store for a {type(store).__name__}: pass keys=..."
    )


def protect(
    store: EventStore,
    provider: KeyProvider | None = None,
    *,
    keys: SubjectKeyStore | None = None,
    personal_data: Mapping[str, PersonalFields] | None = None,
    encrypt_payloads: bool = False,
    encrypt_metadata: Iterable[str] = (),
    snapshots: SnapshotStore | None = None,
    on_erased: Iterable[Callable[[Erasure], object]] = (),
) -> ProtectedEventStore:
    """``store`` behind field-level encryption of personal data; see :class:`ProtectedEventStore`.

    ``provider`` holds the master keys (default: :meth:`LocalKeyProvider.from_env`,
    ``$ESKIT_MASTER_KEYS``); ``keys`` the subjects' wrapped keys (default:
    :func:`subject_key_store_beside`). ``personal_data`` marks fields of plain-dict
    event types. ``encrypt_payloads=True`` also seals every whole payload with a
    store-wide key (encryption at rest of everything but the event type, stream,
    metadata, versions and positions); ``encrypt_metadata`` names metadata keys
    whose values are sealed with that key too.
    """
    return ProtectedEventStore(
        store, LocalKeyProvider.from_env() if provider is None else provider,
        keys=subject_key_store_beside(store) if keys is None else keys,
        personal_data=personal_data, encrypt_payloads=encrypt_payloads,
        encrypt_metadata=encrypt_metadata, snapshots=snapshots,
        on_erased=on_erased,
    )


class ProtectedEventStore(EventStore):
    """An event store whose personal-data fields are sealed per data subject.

    The same API as the store it wraps (``inner``) for events; it adds
    :meth:`erase_subject`, :meth:`export_subject` and :meth:`rewrap`. Appends
    and reads of ``inner`` itself see the sealed form.

    Unwrapped subject keys are cached (at most 4,096), but checked before every
    append and page read against the key store's count of key changes (one
    small query), so an erasure takes effect at once in every process: a read
    or append that starts after :meth:`erase_subject` returned never uses the
    erased key. With a key store that does not count changes
    (:class:`~eskit.protection.keystore.CountsKeyChanges`), the keys' rows are
    fetched every time instead. Not guaranteed: an append or read running
    while the erasure commits may still use the key (an append that does
    writes fields that read as redacted).
    """

    def __init__(
        self,
        store: EventStore,
        provider: KeyProvider,
        *,
        keys: SubjectKeyStore,
        personal_data: Mapping[str, PersonalFields] | None = None,
        encrypt_payloads: bool = False,
        encrypt_metadata: Iterable[str] = (),
        snapshots: SnapshotStore | None = None,
        on_erased: Iterable[Callable[[Erasure], object]] = (),
    ) -> None:
        if not isinstance(store, EventStore) or isinstance(store, ProtectedEventStore):
            raise InvalidInputError("protect() takes an eskit EventStore, not a protected one")
        if not isinstance(provider, KeyProvider):
            raise InvalidInputError("provider must implement KeyProvider")
        self.inner = store
        self.registry = store.registry
        self.max_event_bytes = store.max_event_bytes
        self.db_system = store.db_system
        self.provider = provider
        self.keys = keys
        self.snapshots = snapshots
        self.on_erased = tuple(on_erased)
        self._t = Transcoder(
            store.registry, Marks(store.registry, personal_data or {}),
            encrypt_payloads=bool(encrypt_payloads), encrypt_metadata=encrypt_metadata,
        )
        self._store_key: DataKey | None = None  # never erased, so it may be cached
        self._unwrapped = UnwrapCache()
        self._unwrapped_provider: KeyProvider = provider
        self._cache = KeyCache()

    # -- keys --------------------------------------------------------------------------

    def _unwrap(self, row: WrappedKey) -> DataKey:
        return self._unwrapped.unwrap(row, self.provider)

    def _validate_cache(self) -> int | None:
        """Empty the key caches if a key changed anywhere since they were filled; the
        count of changes the keys fetched next are cached under."""
        if self._unwrapped_provider is not self.provider:  # a new provider: trust nothing
            self._unwrapped = UnwrapCache()
            self._unwrapped_provider = self.provider
            self._cache.clear()
        keys = self.keys
        return self._cache.validate(
            keys.key_changes() if isinstance(keys, CountsKeyChanges) else None
        )

    def _keys_for(self, subjects: Collection[str]) -> dict[str, DataKey]:
        """The data key of each subject, created for subjects that have none."""
        if not subjects:
            return {}
        changes = self._validate_cache()
        found, missing = self._cache.by_subject(subjects)
        if not missing:
            return found
        stored = {s: self._unwrap(row) for s, row in self.keys.current(missing).items()}
        self._cache.put(stored.values(), changes)
        found.update(stored)
        missing = [s for s in missing if s not in stored]
        if missing:
            fresh = [new_wrapped_key(s, self.provider) for s in missing]
            rows = self.keys.add([wrapped for _, wrapped in fresh])
            mine = {key.key_id: key for key, _ in fresh}
            for subject, row in rows.items():  # a concurrent writer's key where it was first
                found[subject] = mine.get(row.key_id) or self._unwrap(row)
                self._cache.put((found[subject],), changes)
        return found

    def _keys_by_id(self, key_ids: Collection[str]) -> dict[str, DataKey]:
        if not key_ids:
            return {}
        changes = self._validate_cache()
        found, missing = self._cache.by_id(key_ids)
        if missing:
            stored = {k: self._unwrap(row) for k, row in self.keys.by_id(missing).items()}
            self._cache.put(stored.values(), changes)
            found.update(stored)
        return found

    def _open_payloads(self, events: list[Event]) -> list[Event]:
        ids = self._t.payload_key_ids(events)
        if not ids:
            return events
        cached = self._store_key
        keys = {cached.key_id: cached} if cached is not None and cached.key_id in ids else {}
        if len(keys) < len(ids):
            keys = self._keys_by_id(ids)
            for key in keys.values():
                if key.subject == STORE_SUBJECT:
                    self._store_key = key
        return self._t.open_payloads(events, keys)

    def _open(self, events: list[Event]) -> list[Event]:
        if not events:
            return events
        events = self._open_payloads(events)
        scan = self._t.scan(events)
        if not scan.ids:
            return events
        return self._t.open_fields(events, scan, self._keys_by_id(scan.ids))

    # -- the event store API -------------------------------------------------------------

    def append(
        self, stream_id: StreamId, events: Sequence[AppendInput], expected_version: Expected = ANY,
        *, condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Seal the batch's personal data, then append it to ``inner`` (same contract,
        ``condition`` included).

        Bad input, including a personal-data field whose subject field is
        missing, raises :class:`~eskit.InvalidInputError` before anything is
        written (a key created for a new subject may remain: harmless).
        """
        stream = stream_key(stream_id)
        expected = check_expected(expected_version)
        check_condition(condition)
        fast = self.inner._accepts_prepared()
        batch = prepare_batch(
            stream, events, registry=self.registry, max_event_bytes=self.max_event_bytes,
            encode_data=not fast,  # encoded once, sealed (the plan walks the plaintext)
        )
        plan = self._t.plan(batch, trees=fast)
        keys = self._keys_for(self._t.subjects(plan))
        if fast:
            # The plain stores: hand over the sealed batch encoded, not to be checked
            # and encoded all over again (half of what sealing cost).
            sealed = self._t.seal_pending(batch, plan, keys,
                                          max_event_bytes=self.inner.max_event_bytes)
            result = self.inner._append_prepared(stream_id, stream, expected, sealed, condition)
        else:  # a wrapper with its own append (another protected store, say): its API
            result = self.inner.append(stream_id, self._t.seal(batch, plan, keys), expected,
                                       condition=condition)
        return self._opened(result, batch)

    def append_many(
        self, appends: Sequence[StreamAppend], *, condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        """Seal every stream's personal data, then append to ``inner`` in one
        transaction (same contract as :meth:`eskit.EventStore.append_many`,
        ``condition`` included).

        The keys of every subject of the call are fetched (or created) at once;
        to a plain store the sealed batches go encoded: each payload is walked
        by the codec once, as plaintext, and the sealed form spliced from that.
        """
        check_condition(condition)
        fast = self.inner._accepts_prepared()
        prepared = prepare_appends(
            appends, registry=self.registry, max_event_bytes=self.max_event_bytes,
            encode_data=not fast,
        )
        plans = self._t.plan_many(prepared, trees=fast)
        keys = self._keys_for(self._t.subjects_many(plans))
        if fast:
            results = self.inner._append_many_prepared(self._t.seal_many(
                prepared, plans, keys, max_event_bytes=self.inner.max_event_bytes
            ), condition)
        else:
            results = self.inner.append_many([
                StreamAppend(a.stream_id, self._t.seal(a.batch, plan, keys), a.expected)
                for a, plan in zip(prepared, plans, strict=True)
            ], condition=condition)
        return [self._opened(r, a.batch) for r, a in zip(results, prepared, strict=True)]

    def _opened(self, result: AppendResult, batch: list[PendingEvent]) -> AppendResult:
        # A retry's stored events may differ from these, and sealed metadata must be
        # opened: then read them back; otherwise what was stored is this batch, sealed.
        if result.duplicate or self._t.encrypt_metadata:
            opened = tuple(self._open(list(result.events)))
        else:
            opened = tuple(
                e.reshaped(e.event_type, p.event_data, e.schema_version)
                for e, p in zip(result.events, batch, strict=True)
            )
        return AppendResult(
            result.stream_id, result.version, result.position, opened, result.duplicate
        )

    def _read_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> list[Event]:
        return self._open(self.inner._read_stream(
            stream_id, stream, from_version, to_version, backwards, limit
        ))

    def _read_all_page(self, after: int, limit: int) -> list[Event]:
        # A row the inner store cannot decode, or a field that does not decrypt, ends
        # the page in a way tolerant readers understand: the opened events before it,
        # then its placeholder (see eskit.stores.rows.iter_tolerant).
        try:
            page = self.inner._read_all_page(after, limit)
        except _UndecodableRow as exc:
            raise _UndecodableRow(exc, self._open_prefix(exc.decoded), exc.placeholder) from exc
        return self._open_prefix(page)

    def _open_prefix(self, page: list[Event]) -> list[Event]:
        try:
            return self._open(page)
        except DecodingError as exc:
            if exc.position is None:
                raise
            index, placeholder = split_at_failure(page, exc)
            raise UndecodableSealedRow(exc, self._open_prefix(page[:index]), placeholder
                                       ) from exc

    def _head_version(self, stream: str) -> int:
        return self.inner.head_version(stream)

    def _version_at(self, stream: str, as_of: datetime) -> int:
        return self.inner.version_at(stream, as_of)

    def _head_position(self) -> int:
        return self.inner.head_position()

    def _list_streams(self) -> list[StreamInfo]:
        return self.inner.list_streams()

    def delete_stream(
        self, stream_id: StreamId, expected_version: Expected = ANY, *, hard: bool = False
    ) -> int:
        return self.inner.delete_stream(stream_id, expected_version, hard=hard)

    def restore_stream(self, stream_id: StreamId) -> bool:
        return self.inner.restore_stream(stream_id)

    def _new_waiter(self) -> Waiter:
        return self.inner._new_waiter()  # woken by the inner store's own appends

    def close(self) -> None:
        """Close the key store and the wrapped store."""
        try:
            self.keys.close()
        finally:
            self.inner.close()

    # -- data subjects (the work is in eskit.protection.subjects) ----------------------

    def export_subject(self, subject: object) -> Iterator[Event]:
        """Every event carrying a field sealed for ``subject``, opened, in global order.

        Fields of an erased subject read redacted. Reads the whole store in
        pages (memory stays flat); events are upcast like any read.
        """
        return subjects.export_subject(self, checked_subject(subject))

    def erase_subject(
        self, subject: object, *, snapshots: SnapshotStore | None = None, vacuum: bool = True,
        record: bool = True,
    ) -> Erasure:
        """Crypto-shred ``subject``: delete their key, so their sealed fields read redacted.

        In order: find the streams with the subject's fields (a scan of the
        store); delete the subject's key; delete the snapshots of those
        streams (in ``snapshots``, else the store's own snapshot table);
        append a ``SubjectErased`` event to ``$subject-erasures`` (unless
        ``record=False``); run the key store's purge (``vacuum``: see
        :mod:`eskit.protection.sqlite_keys`); call each ``on_erased``
        callback. Erasing again is safe and repeats every step but the key's.
        Events, versions and positions are never changed.
        """
        return subjects.erase_subject(self, checked_subject(subject), snapshots, vacuum, record)

    def sealed_snapshots(self, inner: SnapshotStore | None = None) -> SealedSnapshotStore:
        """A snapshot store for this store's repositories that seals every state.

        ``inner`` keeps the sealed snapshots (default: the wrapped SQLite or
        PostgreSQL store's own snapshot table). Each stream's snapshots are sealed
        with a key of its own, which :meth:`erase_subject` deletes with the
        snapshots of the streams that held the subject's data. See
        :mod:`eskit.protection.snapshots`.
        """
        if inner is None:
            from eskit.maintenance.pruning import snapshot_store_beside

            inner = snapshot_store_beside(self.inner)
        return SealedSnapshotStore(self, inner)

    def rewrap(self, *, batch_size: int = REWRAP_BATCH,
               progress: Callable[[int], object] | None = None) -> int:
        """Re-wrap every data key under the provider's current master key; how many.

        ``batch_size`` keys per transaction; safe to interrupt and run again
        (what was committed stays re-wrapped). No event is rewritten. Once it
        returns, master keys other than the current one hold no key and may be
        destroyed. ``progress`` is called with the running count after each batch.
        """
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        return subjects.rewrap(self.keys, self.provider, batch_size, progress)
