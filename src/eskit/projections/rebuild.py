"""Rebuild a projection blue/green: replay into fresh tables, then swap them in.

:func:`rebuild` replays all history into a new generation of the projection's
tables (``name_g2`` beside the live ``name_g1``) under a separate checkpoint,
while queries keep reading the live tables through the views. When the new
generation has caught up, one transaction locks the live checkpoint (live
runners of the projection wait), handles the last few events, points the views
at the new tables, moves the live checkpoint and drops the old tables. Queries
never see a half-built read model; a runner that was following live continues
from the swapped-in checkpoint into the new tables.

Only projections that declare ``tables`` can be rebuilt this way, and only
unpartitioned ones. A rebuild that is interrupted leaves the live read model
untouched; running it again starts the new generation over.

**Skipped events stay skipped.** An event an operator skipped
(:func:`~eskit.projections.skip_parked`) is not applied by the rebuild either, and
stays listed as skipped: a rebuild reproduces the read model the operators
decided on. Events parked and not skipped are replayed (and parked again if they
still fail). ``replay_skipped=True`` replays skipped events too and forgets that
they were skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from eskit.errors import InvalidInputError
from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.failures import OnFailure, RetryPolicy
from eskit.projections.projection import Projection
from eskit.projections.runner import BatchResult, ProjectionRunner
from eskit.projections.sql import Tx, create_views, generation_table
from eskit.stores.base import EventStore

__all__ = ["rebuild", "shadow_name"]

_log = logging.getLogger("eskit.projections.rebuild")
LOG_EVERY = 10.0
"""Seconds between INFO lines about a running rebuild's progress."""


def shadow_name(name: str) -> str:
    """The checkpoint name a rebuild of ``name`` uses while it runs."""
    return f"{name}#rebuild"


def _drop_tables(tx: Tx, projection: Projection, generation: int) -> None:
    for table in projection.tables:
        tx.execute(f'DROP TABLE IF EXISTS "{generation_table(table, generation)}"')


def rebuild(
    store: EventStore,
    projection: Projection,
    target: ProjectionTarget,
    *,
    batch_size: int = 500,
    progress: Callable[[BatchResult], None] | None = None,
    retry: RetryPolicy | None = None,
    on_failure: OnFailure = "stop",
    replay_skipped: bool = False,
) -> int:
    """Replay all history into a new generation and swap it in; return events handled.

    Skipped events are passed over unless ``replay_skipped`` (see the module docs).
    """
    if not projection.tables or target.dialect == "memory":
        raise InvalidInputError(
            f"projection {projection.name!r} declares no tables: a blue/green rebuild needs "
            "`tables = (...)` and a SQL target"
        )
    name, shadow = projection.name, shadow_name(projection.name)
    target.setup()
    with target.transaction() as conn:
        target.lock_setup(conn, name)
        live = target.load_state(conn, name, 0)
        new_generation = live.generation + 1
        target.reset(conn, shadow)
        target.load_state(conn, shadow, 0)
        target.set_generation(conn, shadow, 0, new_generation)
        tx = Tx(target.dialect, conn, generation=new_generation, tables=projection.tables)
        _drop_tables(tx, projection, new_generation)  # left by an interrupted rebuild
        projection.setup(tx)

    runner = ProjectionRunner(
        store, projection, target, name=shadow, batch_size=batch_size, retry=retry,
        on_failure=on_failure,
    )
    runner._ready = True  # set up above, in the new generation (no views for the shadow)
    if not replay_skipped:
        runner._skip = frozenset(
            d.event_id for d in target.dead_letters(name, status="skipped")
        )
    _log.info("rebuilding %r into generation %d (%d skipped events passed over)",
              name, new_generation, len(runner._skip))
    handled = runner.run_until_caught_up(_logged(name, progress))

    with target.transaction() as conn:
        live = target.load_state(conn, name, 0)  # live runners wait from here to commit
        state = target.load_state(conn, shadow, 0)
        tx = Tx(target.dialect, conn, generation=new_generation, tables=projection.tables)
        position, tail, last = state.position, 0, None
        for event in store.read_all(state.position):
            if runner.wants(event):
                projection.handle(event, tx)
                tail += 1
            position, last = event.position or position, event
        target.reset(conn, name, 0, keep_skipped=not replay_skipped)
        target.load_state(conn, name, 0)
        target.set_generation(conn, name, 0, new_generation)
        target.save_position(
            conn, name, 0, position, state.events_handled + tail, last, state.events_per_second
        )
        target.move_dead_letters(conn, shadow, name)
        target.reset(conn, shadow)
        create_views(tx, projection.tables, new_generation)
        _drop_tables(tx, projection, live.generation)
    _log.info("rebuilt %r: generation %d is live, %d events handled",
              name, new_generation, handled + tail)
    return handled + tail


def _logged(
    name: str, progress: Callable[[BatchResult], None] | None
) -> Callable[[BatchResult], None]:
    """``progress``, plus an INFO line at most every LOG_EVERY seconds."""
    read = 0
    last = time.monotonic()

    def report(result: BatchResult) -> None:
        nonlocal read, last
        read += result.read
        now = time.monotonic()
        if now - last >= LOG_EVERY:
            last = now
            _log.info("rebuilding %r: %d events read", name, read)
        if progress is not None:
            progress(result)

    return report
