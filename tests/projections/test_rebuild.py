"""Blue/green rebuilds: queries keep answering from the live tables until the swap."""

import sqlite3
import threading
import time

import psycopg

from eskit import NewEvent
from eskit.projections import ProjectionRunner, RetryPolicy, Tx, skip_parked
from eskit.projections.rebuild import rebuild
from tests.projections.helpers import Counter, added, append_visible, counts
from tests.projections.test_failures import Cured


def _total(backend) -> int:
    return sum(n for n, _ in backend.read_counts().values())


def test_rebuild_keeps_queries_answering_and_swaps_in_a_complete_read_model(backend) -> None:
    for i in range(60):
        backend.store.append(f"s{i % 6}", [added(1) for _ in range(10)])
    ProjectionRunner(backend.store, Counter(), backend.target).run_until_caught_up()
    assert _total(backend) == 600

    seen, errors, stop = [], [], threading.Event()

    def query() -> None:
        # A plain reader, as an application would query: no target, no write lock.
        if backend.kind == "sqlite":
            reader = sqlite3.connect(backend.path)
        else:
            reader = psycopg.connect(backend.dsn, autocommit=True)
            reader.execute(f'SET search_path TO "{backend.schema}"')
        while not stop.is_set():
            try:
                seen.append(sum(n for n, _ in counts(reader).values()))
            except Exception as exc:  # any failure is a finding
                errors.append(exc)
            time.sleep(0.001)
        reader.close()

    querier = threading.Thread(target=query)
    querier.start()
    while not seen and not errors:
        time.sleep(0.001)
    progress = []
    handled = rebuild(backend.store, Counter(), backend.target, batch_size=25,
                      progress=progress.append)
    backend.store.append("late", [added(1)])
    ProjectionRunner(backend.store, Counter(), backend.target).run_until_caught_up()
    stop.set()
    querier.join(10)
    assert errors == []
    assert len(seen) > 1
    assert set(seen) <= {600, 601}  # never a partial read model
    assert handled == 600
    assert len(progress) >= 600 // 25
    assert _total(backend) == 601
    (state,) = backend.target.states("counter")
    assert state.generation == 2
    with backend.target.transaction() as conn:  # the old generation is gone
        tx = Tx(backend.target.dialect, conn)
        assert counts(tx, "counts_g2") == counts(tx, "counts")


def test_a_projection_added_to_an_old_store_catches_up_over_all_history(backend) -> None:
    for i in range(30):
        backend.store.append(f"s{i % 3}", [added(2)])
    runner = ProjectionRunner(backend.store, Counter(), backend.target)
    assert runner.run_until_caught_up() == 30
    assert backend.read_counts() == {f"s{i}": (10, 20) for i in range(3)}


def test_a_rebuild_honours_an_operators_skip_and_keeps_it_listed(backend, caplog) -> None:
    caplog.set_level("INFO", logger="eskit.projections.rebuild")
    append_visible(backend.store, "a", [added(1), NewEvent("Poison", {"amount": 50}), added(2)])
    ProjectionRunner(backend.store, Counter(), backend.target, on_failure="park",
                     retry=RetryPolicy(max_attempts=1)).run_until_caught_up()
    (letter,) = backend.target.dead_letters("counter")
    skip_parked(backend.target, "counter", letter.event_id)
    # The handler is fixed now, yet the operator's decision stands in the rebuild.
    assert rebuild(backend.store, Cured(), backend.target) == 2
    assert "1 skipped events passed over" in caplog.text
    assert "rebuilt 'counter': generation 2 is live, 2 events handled" in caplog.text
    assert backend.read_counts() == {"a": (2, 3)}
    (kept,) = backend.target.dead_letters("counter", status="skipped")
    assert kept.event_id == letter.event_id
    # Asked to, a rebuild replays the skipped event and forgets the skip.
    assert rebuild(backend.store, Cured(), backend.target, replay_skipped=True) == 3
    assert backend.read_counts() == {"a": (3, 53)}
    assert backend.target.dead_letters("counter", status=None) == []
