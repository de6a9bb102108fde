"""Unwrapped keys are cached, and an erasure made anywhere still takes effect at once.

"Anywhere" is a key deleted on another connection (another process, or an operator
typing DELETE): the key table's trigger counts it, and the next read or append of a
store holding the key in its cache sees the count move. SQLite and PostgreSQL, sync
and async.
"""

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from eskit import NewEvent, SQLiteEventStore
from eskit.aio import AsyncSQLiteEventStore
from eskit.protection import (
    ERASED,
    InMemorySubjectKeyStore,
    LocalKeyProvider,
    PersonalFields,
    protect,
)
from eskit.protection import aio as protection_aio
from eskit.protection.envelope import DataKey
from eskit.protection.keys import KeyCache
from tests.conftest import new_schema_name

KEYS = LocalKeyProvider({"m": b"m" * 32})
MARKS = {"Noted": PersonalFields("who", ["text"])}


def _noted(who: str, text: str) -> NewEvent:
    return NewEvent("Noted", {"who": who, "text": text})


class Backend:
    """Opens a sync or async protected store, and deletes a key behind its back."""

    def __init__(self, kind: str, tmp_path: Path, dsn: str | None) -> None:
        self.kind = kind
        self.path = tmp_path / "events.db"
        self.dsn = dsn
        self.schema = new_schema_name() if dsn else ""

    def open(self) -> Any:
        if self.kind == "sqlite":
            return protect(SQLiteEventStore(self.path), KEYS, personal_data=MARKS)
        if self.kind == "async-sqlite":
            async def opened() -> Any:
                return await protection_aio.protect(
                    await AsyncSQLiteEventStore.open(self.path), KEYS, personal_data=MARKS)

            return _Sync(opened)
        assert self.dsn is not None
        if self.kind == "postgres":
            from eskit.stores.postgres import PostgresEventStore

            return protect(PostgresEventStore(self.dsn, schema=self.schema, pool_size=2), KEYS,
                           personal_data=MARKS)
        from eskit.aio import AsyncPostgresEventStore

        async def opened_pg() -> Any:
            inner = await AsyncPostgresEventStore.open(self.dsn, schema=self.schema)
            return await protection_aio.protect(inner, KEYS, personal_data=MARKS)

        return _Sync(opened_pg)

    def delete_by_hand(self, subject: str) -> None:
        if "sqlite" in self.kind:
            with closing(sqlite3.connect(self.path)) as conn, conn:
                assert conn.execute("DELETE FROM eskit_subject_keys WHERE subject = ?",
                                    (subject,)).rowcount == 1
            return
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:  # type: ignore[arg-type]
            assert conn.execute(
                f'DELETE FROM "{self.schema}".eskit_subject_keys WHERE subject = %s',
                (subject,)).rowcount == 1


class _Sync:
    """The async protected store's calls, each run to the end on one loop of its own."""

    def __init__(self, opened: Callable[[], Any]) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = self.loop.run_until_complete(opened())

    def append(self, *args: Any) -> Any:
        return self.loop.run_until_complete(self.store.append(*args))

    def read_stream(self, stream: str) -> Any:
        return self.loop.run_until_complete(self.store.read_stream(stream))

    def read_all(self) -> list[Any]:
        async def collect() -> list[Any]:
            return [e async for e in self.store.read_all()]

        return self.loop.run_until_complete(collect())

    @property
    def keys(self) -> Any:
        return self.store.keys

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


@pytest.fixture(params=["sqlite", "async-sqlite", "postgres", "async-postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    dsn = request.getfixturevalue("postgres_dsn") if "postgres" in request.param else None
    return Backend(request.param, tmp_path, dsn)


def _counting(store: Any, name: str) -> list[int]:
    """Count the calls of the key store's ``name`` (the rows it fetches)."""
    calls: list[int] = []
    original: Callable[..., Any] = getattr(store.keys, name)

    def counted(*args: Any) -> Any:
        calls.append(1)
        return original(*args)

    setattr(store.keys, name, counted)
    return calls


def test_a_key_deleted_on_another_connection_is_not_served_from_the_cache(
    backend: Backend,
) -> None:
    store = backend.open()
    try:
        store.append("notes-1", [_noted("p1", "secret"), _noted("p2", "other")])
        by_id = _counting(store.store if isinstance(store, _Sync) else store, "by_id")
        assert [e.event_data["text"] for e in store.read_all()] == ["secret", "other"]
        assert [e.event_data["text"] for e in store.read_all()] == ["secret", "other"]
        assert by_id == []  # both keys came from the cache: no row fetched
        backend.delete_by_hand("p1")
        assert [e.event_data["text"] for e in store.read_stream("notes-1")] == [ERASED, "other"]
        assert len(by_id) == 1  # the count moved: the cache was emptied, the rows fetched
        store.append("notes-1", [_noted("p1", "after")])  # a new key, not the erased one
        texts = [e.event_data["text"] for e in store.read_stream("notes-1")]
        assert texts == [ERASED, "other", "after"]
    finally:
        store.close()


def test_appends_take_cached_keys_and_a_deleted_one_is_replaced_at_once(
    backend: Backend,
) -> None:
    store = backend.open()
    try:
        store.append("notes-1", [_noted("p1", "one")])
        inner = store.store if isinstance(store, _Sync) else store
        current = _counting(inner, "current")
        store.append("notes-1", [_noted("p1", "two")])
        assert current == []
        first_key = inner._cache.by_subject(["p1"])[0]["p1"].key_id
        backend.delete_by_hand("p1")
        store.append("notes-1", [_noted("p1", "three")])
        assert current  # asked again (the SQL key stores ask once more inside add)
        assert inner._cache.by_subject(["p1"])[0]["p1"].key_id != first_key
        assert [e.event_data["text"] for e in store.read_stream("notes-1")] == [
            ERASED, ERASED, "three",
        ]
    finally:
        store.close()


class _Uncounted(InMemorySubjectKeyStore):
    """A key store that does not count its changes (a third party's, say)."""

    key_changes = None  # type: ignore[assignment]


def test_a_key_store_that_does_not_count_changes_is_asked_every_time() -> None:
    from eskit import InMemoryEventStore

    keys = _Uncounted()
    store = protect(InMemoryEventStore(), KEYS, keys=keys, personal_data=MARKS)
    store.append("notes-1", [_noted("p1", "secret")])
    by_id = _counting(store, "by_id")
    for _ in range(2):
        assert store.read_stream("notes-1")[0].event_data["text"] == "secret"
    assert len(by_id) == 2
    keys.delete_subject("p1")
    assert store.read_stream("notes-1")[0].event_data["text"] == ERASED


def test_the_key_cache_is_bounded_and_emptied_when_the_count_moves() -> None:
    cache = KeyCache(size=2)
    keys = [DataKey(f"k{n}", f"s{n}", bytes([n]) * 32) for n in range(3)]
    cache.put(keys[:1], cache.validate(None))
    assert cache.by_id(["k0"]) == ({}, ["k0"])  # no count, nothing cached
    changes = cache.validate(7)
    cache.put(keys[:2], changes)
    assert set(cache.by_id(["k0", "k1"])[0]) == {"k0", "k1"}
    cache.put(keys[2:], changes)  # full: emptied, then the new key
    assert cache.by_id(["k0", "k1", "k2"]) == ({"k2": keys[2]}, ["k0", "k1"])
    assert cache.validate(7) == 7
    assert cache.by_subject(["s2"])[0] == {"s2": keys[2]}
    cache.validate(8)
    assert cache.by_subject(["s2"]) == ({}, ["s2"])


def test_a_key_fetched_before_a_change_is_not_cached_after_it() -> None:
    # Thread A checks the count (7) and fetches a key; meanwhile the key is erased and
    # thread B checks (8): A's key, fetched under 7, must not enter the cache under 8.
    cache = KeyCache()
    key = DataKey("k0", "s0", b"x" * 32)
    fetched_under = cache.validate(7)
    cache.validate(8)
    cache.put([key], fetched_under)
    assert cache.by_id(["k0"]) == ({}, ["k0"])
    # An erasure in this process refuses whatever was fetched before it.
    changes = cache.validate(8)
    cache.invalidate()
    cache.put([key], changes)
    assert cache.by_subject(["s0"]) == ({}, ["s0"])


def test_a_key_table_from_before_the_count_gains_it_and_its_triggers(tmp_path: Path) -> None:
    from eskit.protection.sqlite_keys import SQLiteSubjectKeyStore

    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as conn, conn:  # the table as eskit created it before
        conn.execute("CREATE TABLE eskit_subject_keys (key_id TEXT PRIMARY KEY, subject TEXT "
                     "NOT NULL UNIQUE, master_key_id TEXT NOT NULL, wrapped BLOB NOT NULL, "
                     "created_at TEXT NOT NULL)")
        conn.execute("INSERT INTO eskit_subject_keys VALUES ('k1', 'p1', 'm', x'00', "
                     "'2026-01-01T00:00:00+00:00')")
    keys = SQLiteSubjectKeyStore(path)
    again = SQLiteSubjectKeyStore(path)  # a second process opening it: nothing twice
    try:
        assert keys.key_changes() == 0
        assert keys.delete_subject("p1") == 1
        assert again.key_changes() == 1
    finally:
        keys.close()
        again.close()


def test_a_postgres_key_table_from_before_the_count_gains_it(postgres_dsn: str) -> None:
    import psycopg

    from eskit.protection.postgres_keys import PostgresSubjectKeyStore

    schema = new_schema_name()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".eskit_subject_keys (key_id text PRIMARY KEY, '
                     "subject text NOT NULL UNIQUE, master_key_id text NOT NULL, "
                     "wrapped bytea NOT NULL, created_at timestamptz NOT NULL)")
        conn.execute(f'INSERT INTO "{schema}".eskit_subject_keys VALUES '
                     "('k1', 'p1', 'm', '\\x00', now())")
    keys = PostgresSubjectKeyStore(postgres_dsn, schema=schema)
    again = PostgresSubjectKeyStore(postgres_dsn, schema=schema)
    try:
        assert keys.key_changes() == 0
        assert keys.delete_subject("p1") == 1
        assert again.key_changes() == 1
    finally:
        keys.close()
        again.close()
