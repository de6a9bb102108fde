"""``tx.execute`` hands SQL to the driver unchanged: each target takes its driver's placeholders."""

import sqlite3

import pytest

from eskit import NewEvent
from eskit.errors import InvalidInputError
from eskit.projections import PostgresTarget, Projection, ProjectionRunner, SQLiteTarget, Tx
from eskit.stores.postgres import PostgresEventStore
from tests.conftest import new_schema_name


class Tagged(Projection):
    """Uses jsonb's ``?`` operator and a literal with a question mark, on PostgreSQL."""

    name = "tagged"

    def setup(self, tx: Tx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS tagged (stream TEXT PRIMARY KEY, doc JSONB, "
                   "note TEXT, urgent BOOLEAN)")

    def handle_Tagged(self, event, tx: Tx) -> None:
        tx.execute(
            "INSERT INTO tagged VALUES (%(stream)s, %(doc)s::jsonb, 'why? 100%%', "
            "%(doc)s::jsonb ? 'urgent')",
            {"stream": str(event.aggregate_id), "doc": '{"urgent": 1, "x": 2}'},
        )


def test_postgres_tx_execute_keeps_question_marks_in_literals_and_jsonb_operators(
    postgres_dsn: str,
) -> None:
    schema = new_schema_name()
    store = PostgresEventStore(postgres_dsn, schema=schema)
    target = PostgresTarget(postgres_dsn, schema=schema)
    try:
        store.append("s-1", [NewEvent("Tagged")])
        assert ProjectionRunner(store, Tagged(), target).run_until_caught_up() == 1
        with target.transaction() as conn:
            tx = Tx(target.dialect, conn)
            assert tx.execute("SELECT note, urgent FROM tagged") == [("why? 100%", True)]
            # jsonb's ?| and ?& with positional %s parameters; '?' stays text.
            assert tx.execute(
                "SELECT doc ?| %s, doc ?& %s, 'a?b' FROM tagged",
                (["urgent", "nope"], ["urgent", "nope"]),
            ) == [(True, False, "a?b")]
            # Without parameters the text is sent as it is: no %% needed.
            assert tx.execute("SELECT '100%' || '?'") == [("100%?",)]
            assert tx.placeholder == "%s"
    finally:
        target.close()
        store.close()


def test_sqlite_tx_execute_takes_qmark_and_named_parameters(tmp_path) -> None:
    target = SQLiteTarget(tmp_path / "t.db")
    try:
        with target.transaction() as conn:
            tx = Tx(target.dialect, conn)
            assert tx.placeholder == "?"
            assert tx.execute("SELECT ?, 'why?'", (1,)) == [(1, "why?")]
            assert tx.execute("SELECT :a, :b", {"a": 1, "b": "x"}) == [(1, "x")]
            tx.execute("CREATE TABLE IF NOT EXISTS t (a)")
            tx.executemany("INSERT INTO t VALUES (:a)", [{"a": 1}, {"a": 2}])
            assert tx.execute("SELECT count(*) FROM t") == [(2,)]
    finally:
        target.close()


def test_tx_execute_refuses_a_string_as_parameters(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    with pytest.raises(InvalidInputError):
        Tx("sqlite", conn).execute("SELECT ?", "a")
    conn.close()


def test_a_portable_projection_builds_markers_from_tx_placeholder(backend) -> None:
    # tests/projections/helpers.Counter runs on both targets through tx.placeholder.
    from tests.projections.helpers import Counter, added

    backend.store.append("c-1", [added(2), added(3)])
    assert ProjectionRunner(backend.store, Counter(), backend.target).run_until_caught_up() == 2
    assert backend.read_counts() == {"c-1": (2, 5)}


