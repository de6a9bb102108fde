"""The PostgreSQL store on a SQLAlchemy 2 engine, connection and ORM session."""

from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from eskit import InvalidInputError, NewEvent
from eskit.stores.postgres import PostgresEventStore
from tests.conftest import new_schema_name


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[str] = mapped_column(primary_key=True)
    total: Mapped[int]


@pytest.fixture
def engine(postgres_dsn: str) -> Iterator[sa.Engine]:
    url = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def schema(engine: sa.Engine) -> str:
    schema = new_schema_name()
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        Base.metadata.create_all(conn.execution_options(schema_translate_map={None: schema}))
    return schema


def _orders(engine: sa.Engine, schema: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.text(f'SELECT id FROM "{schema}".orders ORDER BY id')))


def test_an_orm_insert_and_an_append_commit_and_roll_back_together(
    engine: sa.Engine, schema: str
) -> None:
    store = PostgresEventStore.from_sqlalchemy(engine, schema=schema)
    mapped = engine.execution_options(schema_translate_map={None: schema})
    with Session(mapped) as session:
        session.add(Order(id="o-1", total=12))
        session.flush()  # the ORM's INSERT runs first: the append comes late
        with store.in_transaction(session.connection()) as tx:
            tx.append("order-o-1", [NewEvent("OrderPlaced", {"total": 12})], 0)
        assert store.read_stream("order-o-1") == []
        session.commit()
    assert [e.event_type for e in store.read_stream("order-o-1")] == ["OrderPlaced"]
    with Session(mapped) as session:
        session.add(Order(id="o-2", total=3))
        session.flush()
        store.in_transaction(session.connection()).append("order-o-2", [NewEvent("X")], 0)
        session.rollback()
    assert store.read_stream("order-o-2") == []
    assert _orders(engine, schema) == ["o-1"]
    assert [e.aggregate_id for e in store.read_all()] == ["order-o-1"]
    store.close()


def test_a_core_connection_whose_first_statement_is_the_append_still_commits(
    engine: sa.Engine, schema: str
) -> None:
    # SQLAlchemy only sends COMMIT for a transaction it knows: eskit begins it.
    store = PostgresEventStore.from_sqlalchemy(engine, schema=schema)
    with engine.connect() as conn:
        store.in_transaction(conn).append("first", [NewEvent("First")], 0)
        conn.execute(sa.text(f"INSERT INTO \"{schema}\".orders VALUES ('o-3', 1)"))
        conn.commit()
    with engine.connect() as conn:
        on_conn = PostgresEventStore.from_sqlalchemy(conn, schema=schema)
        on_conn.append("second", [NewEvent("Second")], 0)  # joins conn's transaction
        assert store.read_stream("second") == []
        conn.commit()
        on_conn.close()
    assert [e.aggregate_id for e in store.read_all()] == ["first", "second"]
    assert _orders(engine, schema) == ["o-3"]
    store.close()


def test_the_engine_store_gives_connections_back_as_it_found_them(
    engine: sa.Engine, schema: str
) -> None:
    store = PostgresEventStore.from_sqlalchemy(engine, schema=schema)
    for n in range(5):
        store.append(f"s-{n}", [NewEvent("E")], 0)  # each its own transaction
    assert len(list(store.read_all())) == 5
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert isinstance(driver, psycopg.Connection)
        assert driver.autocommit is False, "the pool's connections keep their mode"
    finally:
        raw.close()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    store.close()


def test_other_drivers_are_refused_before_connecting() -> None:
    engine = sa.create_engine("sqlite://")
    with pytest.raises(InvalidInputError, match="psycopg"):
        PostgresEventStore.from_sqlalchemy(engine, schema="x")
    with pytest.raises(InvalidInputError, match="Engine or Connection"):
        PostgresEventStore.from_sqlalchemy(object(), schema="x")


def test_append_many_on_the_engine_store_and_in_an_orm_session(
    engine: sa.Engine, schema: str
) -> None:
    from eskit import StreamAppend

    store = PostgresEventStore.from_sqlalchemy(engine, schema=schema)
    store.append_many([StreamAppend("a", [NewEvent("A")], 0), StreamAppend("b", [NewEvent("B")])])
    mapped = engine.execution_options(schema_translate_map={None: schema})
    with Session(mapped) as session:
        session.add(Order(id="o-9", total=1))
        session.flush()
        store.in_transaction(session.connection()).append_many([
            StreamAppend("a", [NewEvent("A2")], 1), StreamAppend("c", [NewEvent("C")], 0),
        ])
        assert store.read_stream("c") == []
        session.commit()
    assert [e.event_type for e in store.read_all()] == ["A", "B", "A2", "C"]
    assert _orders(engine, schema) == ["o-9"]
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    store.close()
