"""The protected event store for asyncio: :class:`AsyncProtectedEventStore`.

The same layer as :mod:`eskit.protection.store`, over an
:class:`~eskit.aio.AsyncEventStore`, with the same guarantees: the sealing
and opening decisions are the one :class:`~eskit.protection.transcoder.Transcoder`.
Key stores are the sync ones; their calls run in a worker thread (the
in-memory one directly), so the loop never blocks on the key table. Master
key providers are called directly: a provider that calls a remote KMS should
cache what it unwraps.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from eskit.aio.snapshots import AsyncSnapshotStore
from eskit.aio.store import AsyncEventStore
from eskit.aio.subscription import AsyncWaiter
from eskit.dcb import AppendCondition, check_condition
from eskit.errors import DecodingError, InvalidInputError
from eskit.events import Event, StreamId
from eskit.protection.aio_snapshots import AsyncSealedSnapshotStore
from eskit.protection.envelope import DataKey
from eskit.protection.erasure import (
    ERASURES_STREAM,
    SNAPSHOT_PAGE,
    Erasure,
    checked_subject,
    erasure_record,
)
from eskit.protection.keys import (
    KeyCache,
    KeyProvider,
    LocalKeyProvider,
    UnwrapCache,
    WrappedKey,
    new_wrapped_key,
    rewrapped,
)
from eskit.protection.keystore import CountsKeyChanges, InMemorySubjectKeyStore, SubjectKeyStore
from eskit.protection.marking import Marks, PersonalFields
from eskit.protection.snapshots import snapshot_subject
from eskit.protection.store import REWRAP_BATCH, subject_key_store_beside
from eskit.protection.transcoder import (
    STORE_SUBJECT,
    Transcoder,
    UndecodableSealedRow,
    split_at_failure,
)
from eskit.stores.arguments import check_expected, prepare_batch, stream_key
from eskit.stores.model import (
    ANY,
    READ_ALL_PAGE_SIZE,
    AppendInput,
    AppendResult,
    Expected,
    PendingEvent,
    StreamAppend,
    StreamInfo,
)
from eskit.stores.multi import prepare_appends
from eskit.stores.rows import _UndecodableRow

__all__ = ["AsyncProtectedEventStore", "AsyncSealedSnapshotStore", "protect"]

T = TypeVar("T")


def _default_keys(store: AsyncEventStore) -> SubjectKeyStore:
    sync_store = getattr(store, "sync_store", None)  # the memory and SQLite async stores
    if sync_store is not None:
        return subject_key_store_beside(sync_store)
    loaded = sys.modules.get("eskit.aio.postgres")
    if loaded is not None and isinstance(store, loaded.AsyncPostgresEventStore):
        if store.pool is None:
            raise InvalidInputError(
                "an async PostgreSQL store without its own pool: pass "
                "keys=PostgresSubjectKeyStore(dsn, schema=...)"
            )
        from eskit.protection.postgres_keys import PostgresSubjectKeyStore

        return PostgresSubjectKeyStore(store.pool.conninfo, schema=store.schema)
    raise InvalidInputError(
        f"no default subject key store for a {type(store).__name__}: pass keys=..."
    )


async def protect(
    store: AsyncEventStore,
    provider: KeyProvider | None = None,
    *,
    keys: SubjectKeyStore | None = None,
    personal_data: Mapping[str, PersonalFields] | None = None,
    encrypt_payloads: bool = False,
    encrypt_metadata: Iterable[str] = (),
    snapshots: AsyncSnapshotStore | None = None,
    on_erased: Iterable[Callable[[Erasure], object]] = (),
) -> AsyncProtectedEventStore:
    """``store`` behind field-level encryption; arguments as for the sync :func:`protect`."""
    if keys is None:
        keys = await asyncio.to_thread(_default_keys, store)
    return AsyncProtectedEventStore(
        store, LocalKeyProvider.from_env() if provider is None else provider, keys=keys,
        personal_data=personal_data, encrypt_payloads=encrypt_payloads,
        encrypt_metadata=encrypt_metadata, snapshots=snapshots,
        on_erased=on_erased,
    )


class AsyncProtectedEventStore(AsyncEventStore):
    """:class:`~eskit.protection.ProtectedEventStore` for asyncio (awaited methods)."""

    def __init__(
        self,
        store: AsyncEventStore,
        provider: KeyProvider,
        *,
        keys: SubjectKeyStore,
        personal_data: Mapping[str, PersonalFields] | None = None,
        encrypt_payloads: bool = False,
        encrypt_metadata: Iterable[str] = (),
        snapshots: AsyncSnapshotStore | None = None,
        on_erased: Iterable[Callable[[Erasure], object]] = (),
    ) -> None:
        if not isinstance(store, AsyncEventStore) or isinstance(store, AsyncProtectedEventStore):
            raise InvalidInputError("protect() takes an AsyncEventStore, not a protected one")
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
        self._store_key: DataKey | None = None
        self._unwrapped = UnwrapCache()
        self._unwrapped_provider: KeyProvider = provider
        self._cache = KeyCache()

    async def _io(self, function: Callable[..., T], *args: Any) -> T:
        if isinstance(self.keys, InMemorySubjectKeyStore):
            return function(*args)
        return await asyncio.to_thread(function, *args)

    # -- keys (as in the sync store) -----------------------------------------------------

    def _unwrap(self, row: WrappedKey) -> DataKey:
        return self._unwrapped.unwrap(row, self.provider)

    async def _validate_cache(self) -> int | None:
        if self._unwrapped_provider is not self.provider:  # a new provider: trust nothing
            self._unwrapped = UnwrapCache()
            self._unwrapped_provider = self.provider
            self._cache.clear()
        keys = self.keys
        if isinstance(keys, CountsKeyChanges):
            return self._cache.validate(await self._io(keys.key_changes))
        return self._cache.validate(None)

    async def _keys_for(self, subjects: Collection[str]) -> dict[str, DataKey]:
        if not subjects:
            return {}
        changes = await self._validate_cache()
        found, missing = self._cache.by_subject(subjects)
        if not missing:
            return found
        rows = await self._io(self.keys.current, missing)
        stored = {s: self._unwrap(row) for s, row in rows.items()}
        self._cache.put(stored.values(), changes)
        found.update(stored)
        missing = [s for s in missing if s not in stored]
        if missing:
            fresh = [new_wrapped_key(s, self.provider) for s in missing]
            added = await self._io(self.keys.add, [wrapped for _, wrapped in fresh])
            mine = {key.key_id: key for key, _ in fresh}
            for subject, row in added.items():
                found[subject] = mine.get(row.key_id) or self._unwrap(row)
                self._cache.put((found[subject],), changes)
        return found

    async def _keys_by_id(self, key_ids: Collection[str]) -> dict[str, DataKey]:
        if not key_ids:
            return {}
        changes = await self._validate_cache()
        found, missing = self._cache.by_id(key_ids)
        if missing:
            rows = await self._io(self.keys.by_id, missing)
            stored = {k: self._unwrap(row) for k, row in rows.items()}
            self._cache.put(stored.values(), changes)
            found.update(stored)
        return found

    async def _open_payloads(self, events: list[Event]) -> list[Event]:
        ids = self._t.payload_key_ids(events)
        if not ids:
            return events
        cached = self._store_key
        keys = {cached.key_id: cached} if cached is not None and cached.key_id in ids else {}
        if len(keys) < len(ids):
            keys = await self._keys_by_id(ids)
            for key in keys.values():
                if key.subject == STORE_SUBJECT:
                    self._store_key = key
        return self._t.open_payloads(events, keys)

    async def _open(self, events: list[Event]) -> list[Event]:
        if not events:
            return events
        events = await self._open_payloads(events)
        scan = self._t.scan(events)
        if not scan.ids:
            return events
        return self._t.open_fields(events, scan, await self._keys_by_id(scan.ids))

    # -- the event store API -------------------------------------------------------------

    async def append(
        self, stream_id: StreamId, events: Sequence[AppendInput], expected_version: Expected = ANY,
        *, condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Seal the batch's personal data, then append it to ``inner`` (same contract,
        ``condition`` included)."""
        stream = stream_key(stream_id)
        expected = check_expected(expected_version)
        check_condition(condition)
        fast = self.inner._accepts_prepared()
        batch = prepare_batch(
            stream, events, registry=self.registry, max_event_bytes=self.max_event_bytes,
            encode_data=not fast,  # encoded once, sealed (the plan walks the plaintext)
        )
        plan = self._t.plan(batch, trees=fast)
        keys = await self._keys_for(self._t.subjects(plan))
        if fast:  # as in the sync store: encoded once, sealed
            sealed = self._t.seal_pending(batch, plan, keys,
                                          max_event_bytes=self.inner.max_event_bytes)
            result = await self.inner._append_prepared(stream_id, stream, expected, sealed,
                                                       condition)
        else:
            result = await self.inner.append(stream_id, self._t.seal(batch, plan, keys),
                                             expected, condition=condition)
        return await self._opened(result, batch)

    async def append_many(
        self, appends: Sequence[StreamAppend], *, condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        """As :meth:`eskit.protection.ProtectedEventStore.append_many`."""
        check_condition(condition)
        fast = self.inner._accepts_prepared()
        prepared = prepare_appends(
            appends, registry=self.registry, max_event_bytes=self.max_event_bytes,
            encode_data=not fast,
        )
        plans = self._t.plan_many(prepared, trees=fast)
        keys = await self._keys_for(self._t.subjects_many(plans))
        if fast:
            results = await self.inner._append_many_prepared(self._t.seal_many(
                prepared, plans, keys, max_event_bytes=self.inner.max_event_bytes
            ), condition)
        else:
            results = await self.inner.append_many([
                StreamAppend(a.stream_id, self._t.seal(a.batch, plan, keys), a.expected)
                for a, plan in zip(prepared, plans, strict=True)
            ], condition=condition)
        return [await self._opened(r, a.batch) for r, a in zip(results, prepared, strict=True)]

    async def _opened(self, result: AppendResult, batch: list[PendingEvent]) -> AppendResult:
        # A retry's stored events may differ from these, and sealed metadata must be
        # opened: then read them back; otherwise what was stored is this batch, sealed.
        if result.duplicate or self._t.encrypt_metadata:
            opened = tuple(await self._open(list(result.events)))
        else:
            opened = tuple(
                e.reshaped(e.event_type, p.event_data, e.schema_version)
                for e, p in zip(result.events, batch, strict=True)
            )
        return AppendResult(
            result.stream_id, result.version, result.position, opened, result.duplicate
        )

    async def _append(self, *args: Any) -> AppendResult:  # append is overridden whole
        raise NotImplementedError

    async def _read_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> list[Event]:
        return await self._open(await self.inner._read_stream(
            stream_id, stream, from_version, to_version, backwards, limit
        ))

    async def _read_all_page(self, after: int, limit: int) -> list[Event]:
        # As in the sync store: tolerant readers get the opened prefix and a placeholder.
        try:
            page = await self.inner._read_all_page(after, limit)
        except _UndecodableRow as exc:
            prefix = await self._open_prefix(exc.decoded)
            raise _UndecodableRow(exc, prefix, exc.placeholder) from exc
        return await self._open_prefix(page)

    async def _open_prefix(self, page: list[Event]) -> list[Event]:
        try:
            return await self._open(page)
        except DecodingError as exc:
            if exc.position is None:
                raise
            index, placeholder = split_at_failure(page, exc)
            prefix = await self._open_prefix(page[:index])
            raise UndecodableSealedRow(exc, prefix, placeholder) from exc

    async def _head_version(self, stream: str) -> int:
        return await self.inner.head_version(stream)

    async def _version_at(self, stream: str, as_of: datetime) -> int:
        return await self.inner.version_at(stream, as_of)

    async def _head_position(self) -> int:
        return await self.inner.head_position()

    async def _list_streams(self) -> list[StreamInfo]:
        return await self.inner.list_streams()

    async def delete_stream(
        self, stream_id: StreamId, expected_version: Expected = ANY, *, hard: bool = False
    ) -> int:
        return await self.inner.delete_stream(stream_id, expected_version, hard=hard)

    async def restore_stream(self, stream_id: StreamId) -> bool:
        return await self.inner.restore_stream(stream_id)

    async def _new_waiter(self) -> AsyncWaiter:
        return await self.inner._new_waiter()

    async def close(self) -> None:
        """Close the key store and the wrapped store."""
        try:
            await self._io(self.keys.close)
        finally:
            await self.inner.close()

    # -- data subjects --------------------------------------------------------------------

    async def _stored_pages(self) -> AsyncIterator[list[Event]]:
        after = 0
        while True:
            page = await self.inner._read_all_page(after, READ_ALL_PAGE_SIZE)
            if page:
                yield await self._open_payloads(page)
            if len(page) < READ_ALL_PAGE_SIZE:
                return
            after = page[-1].position

    async def export_subject(self, subject: object) -> AsyncIterator[Event]:
        """As :meth:`eskit.protection.ProtectedEventStore.export_subject`, ``async for``."""
        wanted = checked_subject(subject)
        async for page in self._stored_pages():
            mine = [e for e in page if self._t.mentions(e, wanted)]
            if mine:
                scan = self._t.scan(mine)
                keys = await self._keys_by_id(scan.ids)
                for event in self.registry.upcast(self._t.open_fields(mine, scan, keys)):
                    yield event

    async def erase_subject(
        self, subject: object, *, snapshots: AsyncSnapshotStore | None = None,
        vacuum: bool = True, record: bool = True,
    ) -> Erasure:
        """As :meth:`eskit.protection.ProtectedEventStore.erase_subject`: snapshots are
        deleted from ``snapshots``, the store's ``snapshots``, else the SQLite or
        PostgreSQL store's own snapshot table."""
        wanted = checked_subject(subject)
        streams: dict[str, None] = {}
        async for page in self._stored_pages():
            for e in page:
                if self._t.mentions(e, wanted):
                    streams.setdefault(stream_key(e.aggregate_id))
        deleted = await self._io(self.keys.delete_subject, wanted)
        self._cache.invalidate()  # at once here, whatever the key store counts
        target = snapshots or self.snapshots
        notes: list[str] = []
        if target is not None:
            removed = await _delete_snapshots(target, set(streams))
        else:
            removed = await self._delete_own_snapshots(set(streams), notes)
        for stream in streams:  # sealed snapshots (either front end's): copies lose their key
            await self._io(self.keys.delete_subject, snapshot_subject(stream))
        self._cache.invalidate()
        position = 0
        if record:
            appended = await self.inner.append(
                ERASURES_STREAM, [erasure_record(wanted, list(streams), deleted)]
            )
            position = appended.position
        purge = await self._io(lambda: self.keys.purge(vacuum=vacuum))
        erasure = Erasure(wanted, deleted, tuple(streams), removed, purge, position,
                          tuple(notes))
        for callback in self.on_erased:
            callback(erasure)
        return erasure

    async def sealed_snapshots(self, inner: AsyncSnapshotStore | None = None
                               ) -> AsyncSealedSnapshotStore:
        """A snapshot store for this store's repositories that seals every state.

        As :meth:`eskit.protection.ProtectedEventStore.sealed_snapshots`, awaited:
        ``inner`` keeps the sealed snapshots (default: the wrapped async SQLite or
        PostgreSQL store's own snapshot table, checked without blocking the loop).
        See :mod:`eskit.protection.aio_snapshots`.
        """
        if inner is None:
            from eskit.maintenance.pruning import snapshot_store_beside_async

            inner = await snapshot_store_beside_async(self.inner)
        return AsyncSealedSnapshotStore(self, inner)

    async def _delete_own_snapshots(self, streams: set[str], notes: list[str]) -> int:
        """Delete from the snapshot table in the inner store's own database, if it has one."""
        from eskit.maintenance.pruning import snapshot_store_beside_async

        try:
            own = await snapshot_store_beside_async(self.inner)
        except InvalidInputError:
            notes.append("no snapshot store given and the store keeps none of its own")
            return 0
        try:
            return await _delete_snapshots(own, streams)
        finally:
            await own.close()

    async def rewrap(self, *, batch_size: int = REWRAP_BATCH,
                     progress: Callable[[int], object] | None = None) -> int:
        """As :meth:`eskit.protection.ProtectedEventStore.rewrap`."""
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        current = self.provider.current_key_id()
        done, after = 0, ""
        while rows := await self._io(self.keys.not_wrapped_by, current, after, batch_size):
            done += await self._io(self.keys.replace, [rewrapped(r, self.provider) for r in rows])
            after = rows[-1].key_id
            if progress is not None:
                progress(done)
        return done


async def _delete_snapshots(snapshots: AsyncSnapshotStore, streams: set[str]) -> int:
    if not streams:
        return 0
    removed = 0
    after = None
    while page := await snapshots._aggregates_after(after, SNAPSHOT_PAGE):
        mine = [key for key in page if key[0] in streams]
        if mine:
            removed += await snapshots._prune_aggregates(mine, 0)
        after = page[-1]
    return removed
