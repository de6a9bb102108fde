"""eskit.open_store and eskit.aio.open_store: one URL (or $ESKIT_DSN) opens the right store."""

import asyncio
from pathlib import Path

import pytest

import eskit
import eskit.aio
from eskit import NewEvent
from eskit.config import StoreURL, parse_store_url
from tests.conftest import new_schema_name


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:///rel/events.db", StoreURL("sqlite", "rel/events.db")),
    ("sqlite:////abs/events.db", StoreURL("sqlite", "/abs/events.db")),
    ("sqlite://", StoreURL("sqlite", ":memory:")),
    ("sqlite:///a%20b.db?synchronous=normal&busy_timeout=2.5",
     StoreURL("sqlite", "a b.db", options={"synchronous": "NORMAL", "busy_timeout": 2.5})),
    ("events.db", StoreURL("sqlite", "events.db")),
    ("/var/lib/x=1.db", StoreURL("sqlite", "/var/lib/x=1.db")),
    ("memory://", StoreURL("memory", "")),
    ("postgresql://u@h/db", StoreURL("postgres", "postgresql://u@h/db")),
    ("postgres://u@h/db", StoreURL("postgres", "postgres://u@h/db")),
    ("host=h dbname=db", StoreURL("postgres", "host=h dbname=db")),
])
def test_a_url_names_one_kind_of_store(url: str, expected: StoreURL,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESKIT_SCHEMA", raising=False)
    assert parse_store_url(url) == expected


def test_schema_comes_from_the_argument_then_eskit_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESKIT_SCHEMA", "shop")
    assert parse_store_url("postgresql://h/db").schema == "shop"
    assert parse_store_url("postgresql://h/db", schema="other").schema == "other"


@pytest.mark.parametrize("url", [
    "mysql://h/db", "http://example.com/x", "sqlite://host/x.db", "sqlite:///x.db?mode=ro",
    "sqlite:///x.db?synchronous=OFF", "sqlite:///x.db?busy_timeout=-1",
    "sqlite:///x.db?busy_timeout=nan", "memory://x", "", "  ",
])
def test_a_bad_url_is_invalid_input_before_anything_is_opened(url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              ) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(eskit.InvalidInputError):
        eskit.open_store(url)
    with pytest.raises(eskit.InvalidInputError):
        asyncio.run(eskit.aio.open_store(url))
    assert list(tmp_path.iterdir()) == []


def test_without_a_url_or_eskit_dsn_the_error_says_what_to_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESKIT_DSN", raising=False)
    with pytest.raises(eskit.InvalidInputError, match="ESKIT_DSN"):
        eskit.open_store()


def test_eskit_dsn_opens_a_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESKIT_DSN", f"sqlite:///{tmp_path}/events.db")
    store = eskit.open_store()
    try:
        assert isinstance(store, eskit.SQLiteEventStore)
        store.append("s-1", [NewEvent("Happened", {"n": 1})])
    finally:
        store.close()

    async def read_back() -> list[eskit.Event]:
        async_store = await eskit.aio.open_store()
        try:
            assert isinstance(async_store, eskit.aio.AsyncSQLiteEventStore)
            return await async_store.read_stream("s-1")
        finally:
            await async_store.close()

    assert [e.event_data for e in asyncio.run(read_back())] == [{"n": 1}]


def test_a_bare_path_and_url_options_reach_the_sqlite_store(tmp_path: Path) -> None:
    store = eskit.open_store(tmp_path / "bare.db")
    store.close()
    assert (tmp_path / "bare.db").exists()
    store = eskit.open_store(f"sqlite:///{tmp_path}/opt.db?busy_timeout=1.5")
    try:
        assert isinstance(store, eskit.SQLiteEventStore)
    finally:
        store.close()


def test_memory_url_opens_an_in_memory_store() -> None:
    assert isinstance(eskit.open_store("memory://"), eskit.InMemoryEventStore)
    store = asyncio.run(eskit.aio.open_store("memory://"))
    assert isinstance(store, eskit.aio.AsyncInMemoryEventStore)


def test_create_false_never_creates_a_sqlite_file(tmp_path: Path) -> None:
    with pytest.raises(eskit.StoreError):
        eskit.open_store(tmp_path / "missing.db", create=False)
    with pytest.raises(eskit.StoreError):
        asyncio.run(eskit.aio.open_store(tmp_path / "missing.db", create=False))
    assert not (tmp_path / "missing.db").exists()


def test_postgres_url_opens_a_postgres_store_in_the_schema(postgres_dsn: str) -> None:
    schema = new_schema_name()
    store = eskit.open_store(postgres_dsn, schema=schema)
    try:
        assert isinstance(store, eskit.PostgresEventStore)
        assert store.schema == schema
        store.append("s-1", [NewEvent("Happened", {"n": 1})])
    finally:
        store.close()

    async def read_back() -> list[eskit.Event]:
        async_store = await eskit.aio.open_store(postgres_dsn, schema=schema, create=False)
        try:
            return await async_store.read_stream("s-1")
        finally:
            await async_store.close()

    assert [e.event_data for e in asyncio.run(read_back())] == [{"n": 1}]


def test_create_false_refuses_an_empty_postgres_schema(postgres_dsn: str) -> None:
    schema = new_schema_name()
    with pytest.raises(eskit.NotAnEskitStoreError):
        eskit.open_store(postgres_dsn, schema=schema, create=False)
    with pytest.raises(eskit.NotAnEskitStoreError):
        asyncio.run(eskit.aio.open_store(postgres_dsn, schema=schema, create=False))
