"""store.in_transaction(conn).append(...) on SQLite: events in the caller's own transaction.

The application's rows and its events commit or roll back together; eskit never
commits the caller's connection; a failed append undoes only itself (a savepoint);
nothing is visible to other readers before the caller commits, and positions stay
in commit order because SQLite lets one writer in at a time.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    NO_STREAM,
    ConcurrencyError,
    DuplicateEventError,
    InvalidInputError,
    NewEvent,
    SQLiteEventStore,
    StoreError,
)

LIVE = 30.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteEventStore]:
    store = SQLiteEventStore(path, adopt=True)
    yield store
    store.close()


@pytest.fixture
def conn(path: Path, store: SQLiteEventStore) -> Iterator[sqlite3.Connection]:
    """The application's own connection to the store's file, with its own table."""
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, total INTEGER)")
    conn.commit()
    yield conn
    conn.close()


def _e(n: int, event_type: str = "E", event_id: uuid.UUID | None = None) -> NewEvent:
    if event_id is None:
        return NewEvent(event_type, {"n": n})
    return NewEvent(event_type, {"n": n}, event_id=event_id)


def _orders(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as other:
        return other.execute("SELECT id, total FROM orders ORDER BY id").fetchall()


def test_the_applications_rows_and_its_events_commit_together(
    store: SQLiteEventStore, conn: sqlite3.Connection, path: Path
) -> None:
    conn.execute("INSERT INTO orders VALUES ('o-1', 10)")
    result = store.in_transaction(conn).append("order-o-1", [_e(1, "OrderPlaced")], NO_STREAM)
    assert conn.in_transaction, "eskit must not commit the caller's connection"
    assert result.version == 1
    assert result.position > 0
    conn.commit()
    assert _orders(path) == [("o-1", 10)]
    (event,) = store.read_all()
    assert (event.event_id, event.position) == (result.events[0].event_id, result.position)
    assert store.head_position() == result.position


def test_a_rollback_drops_the_applications_rows_and_its_events_together(
    store: SQLiteEventStore, conn: sqlite3.Connection, path: Path
) -> None:
    conn.execute("INSERT INTO orders VALUES ('o-1', 10)")
    store.in_transaction(conn).append("order-o-1", [_e(1), _e(2)], NO_STREAM)
    conn.rollback()
    assert _orders(path) == []
    assert list(store.read_all()) == []
    assert store.head_version("order-o-1") == 0
    # The stream is free again: nothing of the rolled-back append remains.
    assert store.append("order-o-1", [_e(3)], NO_STREAM).version == 1


def test_events_of_an_open_transaction_are_invisible_to_readers_and_subscriptions(
    store: SQLiteEventStore, conn: sqlite3.Connection,
) -> None:
    subscription = store.subscribe(poll_interval=LIVE)
    received: list[Any] = []
    thread = threading.Thread(target=lambda: received.extend(_first(subscription)), daemon=True)
    thread.start()
    conn.execute("INSERT INTO orders VALUES ('o-1', 10)")
    result = store.in_transaction(conn).append("order-o-1", [_e(1)], NO_STREAM)
    time.sleep(0.3)  # the subscription has looked (every 50 ms) and must see nothing
    assert received == []
    assert list(store.read_all()) == []
    assert store.head_position() == 0
    assert store.read_stream("order-o-1") == []
    assert not store.wait_for(result.position, timeout=0.1)
    conn.commit()
    thread.join(5)  # woken by the commit (PRAGMA data_version), not the 30 s poll
    assert not thread.is_alive()
    assert [e.event_id for e in received] == [result.events[0].event_id]


def _first(subscription: Any) -> list[Any]:
    for event in subscription:
        subscription.stop()
        return [event]
    return []


def test_a_conflict_rolls_back_only_the_append_and_the_transaction_goes_on(
    store: SQLiteEventStore, conn: sqlite3.Connection, path: Path
) -> None:
    store.append("order-o-1", [_e(0)], NO_STREAM)
    conn.execute("INSERT INTO orders VALUES ('o-1', 10)")
    with pytest.raises(ConcurrencyError):
        store.in_transaction(conn).append("order-o-1", [_e(1)], NO_STREAM)
    assert conn.in_transaction
    kept = store.in_transaction(conn).append("order-o-1", [_e(2)], 1)
    conn.commit()
    assert _orders(path) == [("o-1", 10)]
    assert [e.event_data["n"] for e in store.read_stream("order-o-1")] == [0, 2]
    assert kept.version == 2


def test_a_batch_failing_halfway_leaves_no_row_and_earlier_appends_in_the_transaction(
    store: SQLiteEventStore, conn: sqlite3.Connection,
) -> None:
    taken = store.append("other", [_e(0)]).events[0].event_id
    conn.execute("INSERT INTO orders VALUES ('o-1', 10)")
    first = store.in_transaction(conn).append("a", [_e(1)], NO_STREAM)
    with pytest.raises(DuplicateEventError):  # its third event's id is stored already
        store.in_transaction(conn).append("b", [_e(2), _e(3), _e(4, event_id=taken)], NO_STREAM)
    assert conn.in_transaction
    conn.commit()
    assert [e.event_id for e in store.read_all()] == [taken, first.events[0].event_id]
    assert store.head_version("b") == 0


def test_retrying_an_append_in_the_same_transaction_is_recognised_as_a_retry(
    store: SQLiteEventStore, conn: sqlite3.Connection,
) -> None:
    events = [_e(1), _e(2)]
    conn.execute("BEGIN IMMEDIATE")
    first = store.in_transaction(conn).append("s", events, NO_STREAM)
    again = store.in_transaction(conn).append("s", events, NO_STREAM)
    assert again.duplicate
    assert again.position == first.position
    conn.commit()
    assert [e.event_id for e in store.read_all()] == [e.event_id for e in first.events]


def test_an_append_through_the_store_waits_for_the_open_transaction_and_comes_after_it(
    store: SQLiteEventStore, conn: sqlite3.Connection,
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    inside = store.in_transaction(conn).append("inside", [_e(1)])
    outside: list[Any] = []
    writer = threading.Thread(target=lambda: outside.append(store.append("outside", [_e(2)])))
    writer.start()
    time.sleep(0.3)
    assert outside == [], "SQLite lets one writer in at a time"
    conn.commit()
    writer.join(10)
    assert outside[0].position > inside.position
    assert [e.aggregate_id for e in store.read_all()] == ["inside", "outside"]


_KILLED_CHILD = """
import sqlite3, sys, time
from eskit import NewEvent, SQLiteEventStore
store = SQLiteEventStore(sys.argv[1])
conn = sqlite3.connect(sys.argv[1])
conn.execute("INSERT INTO orders VALUES ('o-9', 90)")
store.in_transaction(conn).append("order-o-9", [NewEvent("OrderPlaced", {"n": 9})])
print("appended", flush=True)
time.sleep(60)
"""


def test_a_process_killed_before_it_commits_leaves_neither_rows_nor_events(
    store: SQLiteEventStore, conn: sqlite3.Connection, path: Path
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "appended"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert _orders(path) == []
    assert list(store.read_all()) == []
    result = store.append("order-o-9", [_e(1)], NO_STREAM)
    assert result.version == 1


@pytest.mark.parametrize("bad", ["a string", 42, object()], ids=repr)
def test_a_connection_that_is_not_a_sqlite3_connection_is_refused(
    store: SQLiteEventStore, bad: object
) -> None:
    with pytest.raises(InvalidInputError, match=r"sqlite3\.Connection"):
        store.in_transaction(bad).append("s", [_e(1)])
    assert store.head_position() == 0


def test_a_connection_to_another_database_is_refused_before_writing(
    store: SQLiteEventStore, tmp_path: Path
) -> None:
    for other in (sqlite3.connect(tmp_path / "other.db"), sqlite3.connect(":memory:")):
        other.execute("CREATE TABLE t (x)")
        other.execute("INSERT INTO t VALUES (1)")
        assert other.in_transaction
        with pytest.raises(InvalidInputError, match="not this store's file"):
            store.in_transaction(other).append("s", [_e(1)])
        assert other.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE 'eskit%'")\
            .fetchone() == (0,)
        other.close()
    assert store.head_position() == 0


def test_a_connection_with_the_store_only_attached_is_refused(
    store: SQLiteEventStore, path: Path, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "main.db")
    other.execute("ATTACH DATABASE ? AS events", (str(path),))
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(InvalidInputError):
        store.in_transaction(other).append("s", [_e(1)])
    other.close()


def test_a_connection_without_an_open_transaction_is_refused(
    store: SQLiteEventStore, conn: sqlite3.Connection
) -> None:
    assert not conn.in_transaction
    with pytest.raises(InvalidInputError, match="no open transaction"):
        store.in_transaction(conn).append("s", [_e(1)])
    assert not conn.in_transaction
    assert store.head_position() == 0


def test_a_closed_connection_is_refused(store: SQLiteEventStore, path: Path) -> None:
    closed = sqlite3.connect(path)
    closed.close()
    with pytest.raises(InvalidInputError, match="cannot be used"):
        store.in_transaction(closed).append("s", [_e(1)])


def test_an_in_memory_store_refuses_a_connection(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:")
    with SQLiteEventStore(":memory:") as memory, pytest.raises(InvalidInputError):
        memory.in_transaction(conn)
    conn.close()


def test_the_transaction_is_a_context_manager_that_commits_nothing(
    store: SQLiteEventStore, conn: sqlite3.Connection, path: Path
) -> None:
    conn.execute("INSERT INTO orders VALUES ('o-1', 10)")
    with store.in_transaction(conn) as tx:
        tx.append("order-o-1", [_e(1)], NO_STREAM)
    assert conn.in_transaction
    assert store.head_position() == 0
    conn.commit()
    assert store.head_version("order-o-1") == 1


def test_bad_events_are_refused_before_the_connection_is_touched(
    store: SQLiteEventStore, conn: sqlite3.Connection
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(InvalidInputError):
        store.in_transaction(conn).append("s", [])
    with pytest.raises(InvalidInputError):
        store.in_transaction(conn).append("s" * 5000, [_e(1)])
    assert conn.in_transaction
    conn.rollback()


def test_a_closed_store_refuses_a_connection(store: SQLiteEventStore, conn: Any) -> None:
    conn.execute("BEGIN IMMEDIATE")
    store.close()
    with pytest.raises(StoreError):
        store.in_transaction(conn).append("s", [_e(1)])
    conn.rollback()


def test_a_temp_table_that_would_hide_the_events_table_is_refused(
    store: SQLiteEventStore, conn: sqlite3.Connection, path: Path
) -> None:
    conn.execute("CREATE TEMP TABLE eskit_events (x)")
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(InvalidInputError, match="TEMP"):
        store.in_transaction(conn).append("s", [_e(1)])
    conn.rollback()
    assert store.head_position() == 0


def test_the_callers_row_and_text_factories_change_nothing_and_are_restored(
    store: SQLiteEventStore, conn: sqlite3.Connection,
) -> None:
    def as_dict(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
        return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}

    store.append("s", [_e(0)])
    conn.row_factory = as_dict
    conn.text_factory = bytes
    conn.execute("BEGIN IMMEDIATE")
    result = store.in_transaction(conn).append("s", [_e(1), _e(2)], 1)
    with pytest.raises(ConcurrencyError) as conflict:  # its reads go through the factories too
        store.in_transaction(conn).append("s", [_e(3)], 1)
    assert conflict.value.actual_version == 3
    assert conn.row_factory is as_dict
    assert conn.text_factory is bytes
    conn.commit()
    assert (result.version, result.position) == (3, 3)
    assert [e.version for e in store.read_stream("s")] == [1, 2, 3]


def test_what_an_open_transaction_appended_is_not_listed_either(
    store: SQLiteEventStore, conn: sqlite3.Connection,
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    store.in_transaction(conn).append("hidden", [_e(1)])
    assert store.list_streams() == []
    assert store.head_version("hidden") == 0
    conn.commit()
    assert [s.stream_id for s in store.list_streams()] == ["hidden"]


def test_a_subscription_sees_every_committed_event_once_in_order_amid_caller_transactions(
    store: SQLiteEventStore, conn: sqlite3.Connection, path: Path
) -> None:
    """Plain appends and caller transactions (a third of them rolled back) race; a live
    subscription must end up with exactly the committed events, in position order."""
    subscription = store.subscribe(page_size=50, poll_interval=LIVE)
    seen: list[Any] = []
    follower = threading.Thread(target=lambda: seen.extend(subscription), daemon=True)
    follower.start()
    rolled_back: set[uuid.UUID] = set()
    failures: list[BaseException] = []
    lock = threading.Lock()

    def plain(t: int) -> None:
        try:
            for n in range(150):
                store.append(f"plain-{t}", [_e(n)])
        except BaseException as exc:
            failures.append(exc)

    def in_transaction(t: int) -> None:
        own = sqlite3.connect(path, timeout=30)
        try:
            for n in range(100):
                own.execute("BEGIN IMMEDIATE")
                own.execute("INSERT INTO orders VALUES (?, ?)", (f"{t}-{n}", n))
                result = store.in_transaction(own).append(f"tx-{t}", [_e(n), _e(n)])
                if n % 3 == 0:
                    own.rollback()
                    with lock:
                        rolled_back.update(e.event_id for e in result.events)
                else:
                    own.commit()
        except BaseException as exc:
            failures.append(exc)
        finally:
            own.close()

    workers = [threading.Thread(target=plain, args=(t,)) for t in range(3)]
    workers += [threading.Thread(target=in_transaction, args=(t,)) for t in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not failures, failures[:3]
    stored = list(store.read_all())
    assert len(stored) == 3 * 150 + 2 * 2 * (100 - 34)
    deadline = time.monotonic() + 10
    while len(seen) < len(stored) and time.monotonic() < deadline:
        time.sleep(0.01)
    subscription.stop()
    follower.join(5)
    assert [e.event_id for e in seen] == [e.event_id for e in stored]
    assert not rolled_back & {e.event_id for e in seen}
    assert len(_orders(path)) == 2 * (100 - 34)
