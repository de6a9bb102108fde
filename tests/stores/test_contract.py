"""Every event store passes the one contract suite; a new backend is a new class here."""

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from eskit import Event, EventStore, InMemoryEventStore, SQLiteEventStore
from eskit.testing import EventStoreContract
from eskit.testing.compression_contract import CompressionContract
from eskit.testing.dcb_contract import DCBContract
from eskit.testing.deletion_contract import DeletionContract
from tests.conftest import new_schema_name


class TestInMemoryEventStore(EventStoreContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return InMemoryEventStore()


class TestSQLiteFileEventStore(EventStoreContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(tmp_path / "events.db")


class TestSQLiteMemoryEventStore(EventStoreContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(":memory:")


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_store(self, tmp_path: Path) -> EventStore:
        from eskit.stores.postgres import PostgresEventStore

        return PostgresEventStore(self.dsn, schema=new_schema_name())


def partitioned_store(dsn: str, **options: object) -> EventStore:
    """A PostgreSQL store whose events table is partitioned by ranges of 5 positions,
    2 partitions ahead: the contract's events cross partitions, then fill the default."""
    from eskit.maintenance.partitioning import partition_events
    from eskit.stores.postgres import PostgresEventStore

    store = PostgresEventStore(dsn, schema=new_schema_name(), **options)  # type: ignore[arg-type]
    partition_events(store, size=5, ahead=2)
    return store


class TestPostgresPartitionedEventStore(TestPostgresEventStore):
    """The same contract on the partitioned layout (eskit.maintenance.partitioning)."""

    def create_store(self, tmp_path: Path) -> EventStore:
        return partitioned_store(self.dsn)


# -- compression (eskit.testing.compression_contract) ---------------------------------


class TestSQLiteCompression(CompressionContract):
    def create_store(self, tmp_path: Path, compress_threshold: int | None) -> EventStore:
        tmp_path.mkdir(parents=True, exist_ok=True)
        return SQLiteEventStore(tmp_path / "events.db", compress_threshold=compress_threshold)

    def is_stored_compressed(self, store: EventStore, event: Event) -> bool:
        assert isinstance(store, SQLiteEventStore)
        with closing(sqlite3.connect(store.path)) as conn:
            (kind,) = conn.execute(
                "SELECT typeof(data) FROM eskit_events WHERE event_id = ?",
                (event.event_id.bytes,),
            ).fetchone()
        return bool(kind == "blob")

    def corrupt_payload(self, store: EventStore, event: Event, stored: bytes) -> None:
        assert isinstance(store, SQLiteEventStore)
        # The trigger admits a TEXT payload turned into a BLOB with the zstd magic:
        # what it does not check (the frame's content) the read path must catch.
        with closing(sqlite3.connect(store.path)) as conn, conn:
            conn.execute("UPDATE eskit_events SET data = ? WHERE event_id = ?",
                         (stored, event.event_id.bytes))


class TestPostgresCompression(CompressionContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_store(self, tmp_path: Path, compress_threshold: int | None) -> EventStore:
        from eskit.stores.postgres import PostgresEventStore

        return PostgresEventStore(
            self.dsn, schema=new_schema_name(), compress_threshold=compress_threshold
        )

    def is_stored_compressed(self, store: EventStore, event: Event) -> bool:
        import psycopg

        schema = store.schema  # type: ignore[attr-defined]
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                f'SELECT data_zstd IS NOT NULL FROM "{schema}".eskit_events WHERE event_id = %s',
                (event.event_id,),
            ).fetchone()
        assert row is not None
        return bool(row[0])

    def corrupt_payload(self, store: EventStore, event: Event, stored: bytes) -> None:
        import psycopg

        schema = store.schema  # type: ignore[attr-defined]
        with psycopg.connect(self.dsn) as conn, conn.transaction():
            # The compaction flag: the row trigger still wants a frame's magic.
            conn.execute("SELECT set_config('eskit.compacting', 'on', true)")
            conn.execute(
                f'UPDATE "{schema}".eskit_events SET data = NULL, data_zstd = %s '
                "WHERE event_id = %s",
                (stored, event.event_id),
            )


# -- deletion (eskit.testing.deletion_contract) ----------------------------------------


class TestInMemoryDeletion(DeletionContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return InMemoryEventStore()


class TestSQLiteFileDeletion(DeletionContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(tmp_path / "events.db")


class TestSQLiteMemoryDeletion(DeletionContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(":memory:")


class TestPostgresDeletion(DeletionContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_store(self, tmp_path: Path) -> EventStore:
        from eskit.stores.postgres import PostgresEventStore

        return PostgresEventStore(self.dsn, schema=new_schema_name())


class TestPostgresPartitionedDeletion(TestPostgresDeletion):
    def create_store(self, tmp_path: Path) -> EventStore:
        return partitioned_store(self.dsn)


# -- dynamic consistency boundaries (eskit.testing.dcb_contract) ------------------------


class TestInMemoryDCB(DCBContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return InMemoryEventStore()


class TestSQLiteFileDCB(DCBContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(tmp_path / "events.db")


class TestSQLiteMemoryDCB(DCBContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(":memory:")


class TestPostgresDCB(DCBContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_store(self, tmp_path: Path) -> EventStore:
        from eskit.stores.postgres import PostgresEventStore

        return PostgresEventStore(self.dsn, schema=new_schema_name())


class TestPostgresPartitionedDCB(TestPostgresDCB):
    def create_store(self, tmp_path: Path) -> EventStore:
        return partitioned_store(self.dsn)


class TestPostgresPartitionedCompression(TestPostgresCompression):
    def create_store(self, tmp_path: Path, compress_threshold: int | None) -> EventStore:
        return partitioned_store(self.dsn, compress_threshold=compress_threshold)
