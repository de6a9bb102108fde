"""Declarative partitioning of a PostgreSQL store's events table: the statements, no I/O.

The layout (docs/postgres.md, "Partitioning the events table", says why):

* ``eskit_events`` is partitioned **by range of ``seq``**, the identity every
  inserted row takes from one sequence, in insertion order: partition ``k``
  (``eskit_events_p<k>``) holds ``k * size <= seq < (k + 1) * size``, and
  ``eskit_events_default`` catches anything outside the partitions made so far,
  so an append never fails for want of a partition. ``seq`` is the one column a
  row never changes: the late appender's trigger re-stamps ``tx_id`` (the global
  order's first part), which as a partition key could move a row between
  partitions, which PostgreSQL refuses inside a BEFORE trigger.
* A unique index on a partitioned table must contain the partition key, so
  ``(stream_id, version)`` and ``event_id`` can no longer be unique *there*. They
  are unique in ``eskit_event_keys`` (one small row per event, not partitioned,
  with the same constraint names as before), kept by statement triggers with
  transition tables: an insert into the events adds the keys in the same statement,
  so two appends of one version, or an event id used twice, fail with the
  unique violation they always got (and the stores' conflict handling, which reads
  the constraint name, is unchanged); a delete removes them. Every statement of the
  stores works on the partitioned table unchanged.
* Whole partitions are dropped once retention, truncation, deletion or archiving
  left them empty and the sequence has moved past them: the space goes back to the
  file system at once, with no VACUUM.

Not partitioned: ``eskit_event_tags`` (DCB), snapshots and the other tables.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import sql

__all__ = [
    "DEFAULT_PARTITION",
    "LAYOUT_KEY",
    "KEYS_TABLE",
    "PartitionStatements",
    "partition_index",
    "partition_name",
]

LAYOUT_KEY = "partition_size"
"""The ``eskit_meta`` key that records a partitioned layout and its partition size."""
KEYS_TABLE = "eskit_event_keys"
DEFAULT_PARTITION = "eskit_events_default"
_PARTITION = re.compile(r"eskit_events_p(\d+)")


def partition_name(index: int) -> str:
    """The table name of partition ``index`` (``index * size <= seq < (index + 1) * size``)."""
    return f"eskit_events_p{index}"


def partition_index(name: str) -> int | None:
    """The index of a partition's table name; ``None`` for the default or another table."""
    found = _PARTITION.fullmatch(name)
    return int(found.group(1)) if found else None


class PartitionStatements:
    """The statements of partitioning one schema (``schema`` already validated)."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema)
        self.schema = schema
        self._s = s
        self.events = sql.SQL("{}.eskit_events").format(s)
        self.keys = sql.SQL("{}.{}").format(s, sql.Identifier(KEYS_TABLE))
        name = sql.Literal(f'"{schema}".eskit_events')
        self.lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(
            sql.Literal(f"eskit-partitions:{schema}"))
        self.lock_events = sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(self.events)
        self.read_size = sql.SQL("SELECT value FROM {}.eskit_meta WHERE key = {}").format(
            s, sql.Literal(LAYOUT_KEY))
        self.write_size = sql.SQL(
            "INSERT INTO {}.eskit_meta (key, value) VALUES ({}, %s)"
        ).format(s, sql.Literal(LAYOUT_KEY))
        self.kind = sql.SQL("SELECT relkind::text FROM pg_class WHERE oid = to_regclass({})"
                            ).format(name)
        self.seq_range = sql.SQL("SELECT min(seq), max(seq), count(*) FROM {}").format(
            self.events)
        # The identity's state: the next append takes a seq above this one.
        self.last_seq = sql.SQL(
            "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence({}, 'seq')), 0)"
        ).format(name)
        # What the unpartitioned table has besides its data, to be made again on the
        # partitioned one: indexes that are not a constraint's, and triggers.
        self.plain_indexes = sql.SQL(
            """SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
               WHERE i.indrelid = to_regclass({name})
                 AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)
               ORDER BY i.indexrelid"""
        ).format(name=name)
        self.triggers = sql.SQL(
            """SELECT tgname, pg_get_triggerdef(oid), (tgtype & 1) = 0 FROM pg_trigger
               WHERE tgrelid = to_regclass({}) AND NOT tgisinternal ORDER BY tgname"""
        ).format(name)
        """Each trigger: ``(name, definition, is a statement trigger)``."""
        self.partitions = sql.SQL(
            """SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = to_regclass({})"""
        ).format(name)

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(self._s, sql.Identifier(name))

    def create_parent(self, name: str) -> sql.Composed:
        """The partitioned table ``name``, columns, defaults and identity as the events'."""
        return sql.SQL(
            "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING "
            "GENERATED INCLUDING STORAGE INCLUDING CONSTRAINTS) PARTITION BY RANGE (seq)"
        ).format(self.table(name), self.events)

    def create_partition(self, parent: str, index: int, size: int) -> sql.Composed:
        return sql.SQL(
            "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
        ).format(self.table(partition_name(index)), self.table(parent),
                 sql.Literal(index * size), sql.Literal((index + 1) * size))

    def create_default(self, parent: str) -> sql.Composed:
        return sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(
            self.table(DEFAULT_PARTITION), self.table(parent))

    def copy_rows(self, target: str, source: str) -> sql.Composed:
        return sql.SQL("INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM {}").format(
            self.table(target), self.table(source))

    def continue_sequence(self, table: str) -> sql.Composed:
        """Set ``table``'s identity to go on after ``%s`` (the old identity's last value)."""
        return sql.SQL(
            "SELECT setval(pg_get_serial_sequence({}, 'seq'), greatest(%s, 1), %s)"
        ).format(sql.Literal(f'"{self.schema}".{table}'))

    def keys_statements(self) -> list[sql.Composed]:
        """The keys table, filled from the (partitioned) events, and its triggers."""
        s, keys, events = self._s, self.keys, self.events
        return [
            sql.SQL(
                """CREATE TABLE {keys} (
                       stream_id text   NOT NULL,
                       version   bigint NOT NULL,
                       event_id  uuid   NOT NULL,
                       CONSTRAINT eskit_events_stream_version PRIMARY KEY (stream_id, version),
                       CONSTRAINT eskit_events_event_id UNIQUE (event_id)
                   )"""
            ).format(keys=keys),
            sql.SQL("INSERT INTO {} SELECT stream_id, version, event_id FROM {}").format(
                keys, events),
            sql.SQL(
                """CREATE FUNCTION {s}.eskit_add_keys() RETURNS trigger LANGUAGE plpgsql AS $$
                   BEGIN
                       INSERT INTO {keys} (stream_id, version, event_id)
                       SELECT stream_id, version, event_id FROM added;
                       RETURN NULL;
                   END $$"""
            ).format(s=s, keys=keys),
            sql.SQL(
                """CREATE FUNCTION {s}.eskit_drop_keys() RETURNS trigger LANGUAGE plpgsql AS $$
                   BEGIN
                       DELETE FROM {keys} k USING removed r
                       WHERE k.stream_id = r.stream_id AND k.version = r.version;
                       RETURN NULL;
                   END $$"""
            ).format(s=s, keys=keys),
            sql.SQL(
                """CREATE TRIGGER eskit_events_add_keys AFTER INSERT ON {events}
                   REFERENCING NEW TABLE AS added
                   FOR EACH STATEMENT EXECUTE FUNCTION {s}.eskit_add_keys()"""
            ).format(s=s, events=events),
            sql.SQL(
                """CREATE TRIGGER eskit_events_drop_keys AFTER DELETE ON {events}
                   REFERENCING OLD TABLE AS removed
                   FOR EACH STATEMENT EXECUTE FUNCTION {s}.eskit_drop_keys()"""
            ).format(s=s, events=events),
            # What the unique constraints' indexes served on the events themselves.
            sql.SQL("CREATE INDEX eskit_events_stream ON {} (stream_id, version)").format(events),
            sql.SQL("CREATE INDEX eskit_events_id ON {} (event_id)").format(events),
        ]

    def on_partition(self, definition: str, trigger: str, partition: str) -> sql.Composed:
        """A statement trigger of the parent, made again on one partition.

        Statement triggers fire only for the table a statement names: without a
        copy, a ``DELETE`` aimed at a partition would pass the append-only check.
        """
        head, _, rest = definition.partition(" ON ")
        _, _, after_table = rest.partition(" ")
        if not head.startswith(f"CREATE TRIGGER {trigger} ") or not after_table:
            raise ValueError(f"unexpected trigger definition: {definition!r}")
        return sql.SQL("{} ON {} {}").format(
            sql.SQL(head), self.table(partition), sql.SQL(after_table))

    def rename(self, table: str, to: str) -> sql.Composed:
        return sql.SQL("ALTER TABLE {} RENAME TO {}").format(self.table(table),
                                                             sql.Identifier(to))

    def rename_sequence(self, table: str, to: str) -> sql.Composed:
        """Rename ``table``'s identity sequence (named ``<table>_seq_seq``) for ``to``."""
        return sql.SQL("ALTER SEQUENCE {} RENAME TO {}").format(
            self.table(f"{table}_seq_seq"), sql.Identifier(f"{to}_seq_seq"))

    def default_range(self) -> sql.Composed:
        return sql.SQL("SELECT min(seq), max(seq) FROM {}").format(self.table(DEFAULT_PARTITION))

    def lock_partition(self, name: str) -> sql.Composed:
        return sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(self.table(name))

    def is_empty(self, name: str) -> sql.Composed:
        return sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(self.table(name))

    def drop(self, name: str) -> sql.Composed:
        return sql.SQL("DROP TABLE {}").format(self.table(name))


def partition_rows(rows: list[Any]) -> list[tuple[str, int | None, int, int]]:
    """``(name, index or None for the default, estimated rows, bytes)``, in seq order."""
    found = [(name, partition_index(name), max(int(n), 0), int(b)) for name, n, b in rows]
    return sorted(found, key=lambda p: (p[1] is None, p[1] or 0))
