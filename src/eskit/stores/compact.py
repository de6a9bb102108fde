"""Compaction: compress old events that were stored uncompressed (``eskit compact``).

The one path allowed to rewrite a stored event, and only its payload's encoding:
each candidate's JSON is compressed, the frame inflated again and compared byte
for byte with the original, the row rewritten, the stored frame read back and
compared once more, all before the batch's transaction commits. A batch is one
short transaction, so a crash (SIGKILL included) loses at most the batch in
flight, which rolls back whole; a rerun skips what is compressed already.
See docs/storage.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eskit.errors import InvalidInputError, StoreError
from eskit.stores.compression import (
    DEFAULT_COMPRESS_THRESHOLD,
    MAX_INFLATED_BYTES,
    check_compress_threshold,
    compress,
    inflate,
)
from eskit.stores.rows import timestamp_to_micros

__all__ = ["CompactResult", "compact"]

_log = logging.getLogger("eskit.compact")

DEFAULT_BATCH = 500
MAX_BATCH = 10_000

Progress = Callable[[int, int], object]
"""Called after each batch with (events examined so far, events to examine)."""


@dataclass(frozen=True, slots=True)
class CompactResult:
    """What :func:`compact` did."""

    examined: int
    """Uncompressed events old and large enough that were looked at."""
    compressed: int
    """Of those, the events rewritten compressed (the rest would not shrink)."""
    bytes_before: int
    """Payload bytes of the compressed events before."""
    bytes_after: int
    """Their payload bytes after."""
    batches: int


def compact(
    store: Any,
    *,
    older_than: timedelta | datetime,
    batch_size: int = DEFAULT_BATCH,
    threshold: int | None = None,
    progress: Progress | None = None,
) -> CompactResult:
    """Compress the events recorded before ``older_than`` (an age, or a UTC time)
    whose data is stored uncompressed and at least ``threshold`` bytes (default: the
    store's ``compress_threshold``, or 1024 if it has none).

    ``store`` is a :class:`~eskit.SQLiteEventStore` or
    :class:`~eskit.PostgresEventStore` (or the async SQLite store). Works in
    transactions of ``batch_size`` events; safe to interrupt at any moment and run
    again; running it twice compresses nothing the second time. Readers see each
    event identical before, during and after. Raises
    :class:`~eskit.InvalidInputError` for bad arguments (before any I/O) and
    :class:`~eskit.StoreError` if a rewritten payload does not read back equal
    (its batch is rolled back). Not guaranteed: events appended by a transaction
    still open when the pass goes by are left for the next run.
    """
    cutoff = _cutoff(older_than)
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_BATCH:
        raise InvalidInputError(f"batch_size must be an int from 1 to {MAX_BATCH}")
    chosen = check_compress_threshold(threshold)
    backend = _backend(store)
    if chosen is None:
        chosen = getattr(backend, "compress_threshold", None) or DEFAULT_COMPRESS_THRESHOLD
    from eskit.stores.sqlite import SQLiteEventStore

    _check_schema(backend)
    _log.info("compact %s: events before %s of at least %d bytes, batches of %d",
              type(backend).__name__, cutoff.isoformat(), chosen, batch_size)
    if isinstance(backend, SQLiteEventStore):
        result = _SQLitePass(backend, cutoff, chosen, batch_size, progress).run()
    else:
        result = _PostgresPass(backend, cutoff, chosen, batch_size, progress).run()
    _log.info("compact done: %d examined, %d compressed, %d -> %d bytes in %d batches",
              result.examined, result.compressed, result.bytes_before, result.bytes_after,
              result.batches)
    return result


def _cutoff(older_than: object) -> datetime:
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise InvalidInputError("older_than must not be a negative age")
        return datetime.now(UTC) - older_than
    if isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            raise InvalidInputError("older_than must be an aware datetime (UTC)")
        return older_than.astimezone(UTC)
    raise InvalidInputError(
        f"older_than must be a timedelta or a datetime, not {type(older_than).__name__}"
    )


def _backend(store: Any) -> Any:
    from eskit.stores.sqlite import SQLiteEventStore

    store = getattr(store, "sync_store", store)  # the async SQLite store wraps one
    if isinstance(store, SQLiteEventStore):
        return store
    try:
        from eskit.stores.postgres import PostgresEventStore
    except ImportError:  # pragma: no cover - without the postgres extra
        PostgresEventStore = None  # type: ignore[assignment,misc]
    if PostgresEventStore is not None and isinstance(store, PostgresEventStore):
        if store._in_caller_transaction():
            raise InvalidInputError(
                "compact runs its own transactions: give it a store with a pool or DSN"
            )
        return store
    hint = (
        ": compact is sync; give it a PostgresEventStore on the same DSN and schema"
        if type(store).__name__ == "AsyncPostgresEventStore" else ""
    )
    raise InvalidInputError(
        f"compact needs a SQLite or PostgreSQL event store, not {type(store).__name__}{hint}"
    )


def _check_schema(store: Any) -> None:
    """Compaction needs the triggers of the newest schema: refuse an older one."""
    from eskit.stores.sqlite import SQLiteEventStore

    if isinstance(store, SQLiteEventStore):
        from eskit.stores.sqlite import SCHEMA_VERSION as newest

        how = "open it once with SQLiteEventStore(path) to migrate it"
    else:
        from eskit.stores.postgres_schema import SCHEMA_VERSION as newest

        how = "run `eskit migrate` first"
    found = store.schema_version()
    if found < newest:
        raise StoreError(
            f"the store has eskit schema version {found}; compact needs {newest}: {how}"
        )


def _frame(raw: bytes) -> bytes | None:
    """The verified frame for ``raw``, or ``None`` if compressing does not pay."""
    if len(raw) > MAX_INFLATED_BYTES:
        return None
    frame = compress(raw)
    if len(frame) >= len(raw):
        return None
    if inflate(frame) != raw:  # pragma: no cover - zstd round-trips
        raise StoreError("a compressed payload did not inflate to the original")
    return frame


class _Pass:
    def __init__(self, store: Any, cutoff: datetime, threshold: int, batch: int,
                 progress: Progress | None) -> None:
        self.store = store
        self.cutoff = cutoff
        self.threshold = threshold
        self.batch = batch
        self.progress = progress
        self.examined = self.compressed = self.before = self.after = self.batches = 0

    def result(self) -> CompactResult:
        return CompactResult(self.examined, self.compressed, self.before, self.after,
                             self.batches)

    def tick(self, examined: int, compressed: int, total: int) -> None:
        self.batches += 1
        self.examined += examined
        _log.info("compact batch %d: %d examined, %d compressed", self.batches, examined,
                  compressed)
        if self.progress is not None:
            self.progress(self.examined, max(total, self.examined))


class _SQLitePass(_Pass):
    _WHERE = ("typeof(data) = 'text' AND recorded_at < ? AND length(CAST(data AS BLOB)) >= ?")

    def run(self) -> CompactResult:
        store = self.store
        store._usable()
        cutoff = timestamp_to_micros(self.cutoff)
        with store._reading() as conn:
            total = conn.execute(
                f"SELECT count(*) FROM eskit_events WHERE {self._WHERE}",
                (cutoff, self.threshold),
            ).fetchone()[0]
        after = 0
        while True:
            last = self._batch(after, cutoff, total)
            if last is None:
                return self.result()
            after = last

    def _batch(self, after: int, cutoff: int, total: int) -> int | None:
        store = self.store
        with store._maintenance() as conn:
            rows = conn.execute(
                f"SELECT position, data FROM eskit_events WHERE position > ? AND "
                f"{self._WHERE} ORDER BY position LIMIT ?",
                (after, cutoff, self.threshold, self.batch),
            ).fetchall()
            done: list[tuple[int, bytes]] = []
            for position, text in rows:
                raw = text.encode()
                frame = _frame(raw)
                if frame is None:
                    continue
                # The trigger checks again that the frame inflates to the text.
                cur = conn.execute(
                    "UPDATE eskit_events SET data = ? WHERE position = ? AND data IS ?",
                    (frame, position, text),
                )
                if cur.rowcount != 1:
                    raise StoreError(f"event at position {position} changed under compact")
                done.append((position, raw))
                self.before += len(raw)
                self.after += len(frame)
            self._verify(conn, done)
        if not rows:
            return None
        self.compressed += len(done)
        self.tick(len(rows), len(done), total)
        return int(rows[-1][0])

    @staticmethod
    def _verify(conn: Any, done: list[tuple[int, bytes]]) -> None:
        """Each rewritten row, as stored, inflates to its original bytes."""
        for i in range(0, len(done), 500):
            chunk = dict(done[i : i + 500])
            marks = ", ".join("?" * len(chunk))
            stored = dict(conn.execute(
                f"SELECT position, data FROM eskit_events WHERE position IN ({marks})",
                list(chunk),
            ).fetchall())
            for position, raw in chunk.items():
                frame = stored.get(position)
                if type(frame) is not bytes or inflate(frame) != raw:
                    raise StoreError(f"event at position {position} did not read back equal")


class _PostgresPass(_Pass):
    def run(self) -> CompactResult:
        from eskit.stores.postgres_compression import CompactStatements

        statements = CompactStatements(self.store.schema)
        cursor = ("0", 0)
        with self.store._connection() as conn:
            row = conn.execute(statements.count, (self.cutoff, self.threshold)).fetchone()
            total = int(row[0]) if row else 0
            while True:
                with conn.transaction():
                    conn.execute(statements.start)
                    rows = conn.execute(
                        statements.candidates,
                        (*cursor, self.cutoff, self.threshold, self.batch),
                    ).fetchall()
                    done = 0
                    for tx, seq, text in rows:
                        raw = text.encode()
                        frame = _frame(raw)
                        if frame is None:
                            continue
                        stored = conn.execute(statements.rewrite, (frame, tx, seq, text)).fetchone()
                        # As stored, read back by the same statement, before commit.
                        if stored is None or inflate(bytes(stored[0])) != raw:
                            raise StoreError(
                                f"event at ({tx}, {seq}) did not read back equal; batch rolled back"
                            )
                        done += 1
                        self.before += len(raw)
                        self.after += len(frame)
                if not rows:
                    return self.result()
                self.compressed += done
                self.tick(len(rows), done, total)
                cursor = (rows[-1][0], rows[-1][1])
