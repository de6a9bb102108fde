"""The PostgreSQL baseline of ``benchmarks.projections``: the same projection by hand.

A careful hand-written psycopg 3 projector over eskit's own events table, doing
the work of one eskit batch in one transaction, batches of 500:

1. lock its checkpoint row (``SELECT ... FOR UPDATE``);
2. read the next 500 events after it with eskit's page query (the same
   visibility rule: only transactions below the snapshot's xmin), JSON decoded
   with ``orjson`` as eskit decodes;
3. the 500 upserts as one ``executemany`` (psycopg sends them in one pipeline,
   one sync): what ``tx.write`` does in an eskit batch;
4. upsert the checkpoint and commit.

No event objects, no type filter in SQL (every row is a deposit), no parked
streams, no partition test, no handler dispatch. ``writes_only`` skips steps 1-2:
the parameters of every upsert are built before the clock starts, so it measures
the upserts and commits alone (the most a projection of this log could reach).
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

__all__ = ["RawProjector"]

PAGE = (
    # eskit's read_all page: the first rows after the position, cut at the xmin.
    "SELECT tx_id::text, seq, stream_id, data::text FROM (SELECT * FROM eskit_events "
    "WHERE (tx_id, seq) > (%s::text::xid8, %s) ORDER BY tx_id, seq LIMIT %s) AS page "
    "WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx_id, seq"
)
UPSERT = (
    "INSERT INTO {table} AS b VALUES (%s, 1, %s) ON CONFLICT (account) DO UPDATE "
    "SET deposits = b.deposits + 1, cents = b.cents + excluded.cents"
)
CHECKPOINT = (
    "INSERT INTO raw_checkpoints VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
    "SET tx_id = excluded.tx_id, seq = excluded.seq"
)


class RawProjector:
    """One partition of the balances projection, by hand (see the module docstring)."""

    def __init__(self, dsn: str, schema: str, table: str, batch_size: int = 500) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(f'SET search_path TO "{schema}", public')
        self.table, self.name, self.batch_size = table, table, batch_size
        self.upsert = UPSERT.format(table=table)
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (account TEXT PRIMARY KEY, "
                          "deposits INTEGER NOT NULL, cents BIGINT NOT NULL)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS raw_checkpoints "
                          "(name TEXT PRIMARY KEY, tx_id TEXT NOT NULL, seq INTEGER NOT NULL)")
        self.conn.execute("INSERT INTO raw_checkpoints VALUES (%s, '0', 0) "
                          "ON CONFLICT (name) DO NOTHING", (self.name,))

    def run_until_caught_up(self) -> int:
        """Project every visible event after the checkpoint; return how many."""
        conn, cursor, loads, handled = self.conn, self.conn.cursor(), orjson.loads, 0
        while True:
            with conn.transaction():
                tx_id, seq = cursor.execute(
                    "SELECT tx_id, seq FROM raw_checkpoints WHERE name = %s FOR UPDATE",
                    (self.name,),
                ).fetchone()  # type: ignore[misc]
                rows = cursor.execute(PAGE, (tx_id, seq, self.batch_size)).fetchall()
                if not rows:
                    return handled
                cursor.executemany(
                    self.upsert, [(stream, loads(data)["cents"]) for _, _, stream, data in rows]
                )
                cursor.execute(CHECKPOINT, (self.name, rows[-1][0], rows[-1][1]))
            handled += len(rows)

    def prepared_writes(self) -> list[list[tuple[Any, ...]]]:
        """Every batch's upsert parameters, read before timing (for :meth:`write_only`)."""
        rows = self.conn.execute(PAGE, ("0", 0, 10**9)).fetchall()
        params = [(stream, orjson.loads(data)["cents"]) for _, _, stream, data in rows]
        return [params[i:i + self.batch_size] for i in range(0, len(params), self.batch_size)]

    def write_only(self, batches: list[list[tuple[Any, ...]]]) -> int:
        """The upserts and checkpoints of ``batches``, one transaction each; return how many."""
        conn, cursor, handled = self.conn, self.conn.cursor(), 0
        for i, batch in enumerate(batches):
            with conn.transaction():
                cursor.executemany(self.upsert, batch)
                cursor.execute(CHECKPOINT, (self.name, str(i), 0))
            handled += len(batch)
        return handled

    def close(self) -> None:
        self.conn.close()
