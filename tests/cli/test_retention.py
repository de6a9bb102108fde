"""Retention policies: the plan writes nothing, apply deletes expired streams in batches,
a stream that got an event since the plan is left alone, reruns change nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eskit import InvalidInputError, NewEvent, SQLiteEventStore, StreamDeletedError
from eskit.maintenance.retention import (
    RetentionPolicy,
    apply_retention,
    load_policies,
    plan_retention,
)
from tests.cli.helpers import eskit_cli, rows


def _store(path: Path) -> SQLiteEventStore:
    store = SQLiteEventStore(path)
    for n in range(5):
        store.append(f"sensor-{n}", [NewEvent("Reading", {"c": n}), NewEvent("Reading", {})])
    store.append("sensor-hot-1", [NewEvent("Reading", {"c": 9})])
    store.append("order-1", [NewEvent("OrderPlaced", {"total": 1})])
    return store


def _policy_file(tmp_path: Path, policies: list[dict[str, object]]) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policies))
    return path


def test_plan_counts_per_category_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _store(db).close()
    before = db.read_bytes()
    policy = _policy_file(tmp_path, [
        {"prefix": "sensor-", "max_age": "0s"},
        {"prefix": "sensor-hot-", "max_age": "30d"},  # the longer prefix wins
    ])
    result = eskit_cli("retention", "plan", str(db), "--policy", str(policy))
    assert result.returncode == 0, result.stdout + result.stderr
    table = {r[0]: r[1:] for r in rows(result.stdout)}
    assert table["sensor-"][2:4] == ["5", "10"]
    assert int(table["sensor-"][4]) > 0  # bytes
    assert table["sensor-hot-"][2:5] == ["0", "0", "0"]
    assert db.read_bytes() == before


def test_apply_deletes_expired_streams_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _store(db).close()
    policy = _policy_file(tmp_path, [{"prefix": "sensor-", "max_age": "0s"}])
    first = eskit_cli("retention", "apply", str(db), "--policy", str(policy), "--batch", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "6 streams (11 events) deleted in 3 batches" in " ".join(first.stdout.split())
    again = eskit_cli("retention", "apply", str(db), "--policy", str(policy))
    assert "0 streams (0 events) deleted" in " ".join(again.stdout.split())
    with SQLiteEventStore(db) as store:
        assert [s.stream_id for s in store.list_streams()] == ["order-1"]
        with pytest.raises(StreamDeletedError):  # hard by default: a tombstone
            store.append("sensor-0", [NewEvent("Reading", {})])


def test_a_bad_policy_file_is_refused_before_the_store_is_touched(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    for bad in ([], [{"prefix": "", "max_age": "1d"}], [{"prefix": "a-", "max_age": "soon"}],
                [{"prefix": "a-", "max_age": "1d", "extra": 1}],
                [{"prefix": "a-", "max_age": "1d"}, {"prefix": "a-", "max_age": "2d"}]):
        result = eskit_cli("retention", "apply", str(db), "--policy",
                           str(_policy_file(tmp_path, bad)))
        assert result.returncode == 2, bad
        assert "error" in result.stderr
    assert not db.exists()


def test_a_stream_that_got_an_event_after_the_plan_is_skipped(tmp_path: Path) -> None:
    with _store(tmp_path / "events.db") as store:
        policies = [RetentionPolicy("sensor-", timedelta(0), hard=False)]
        plan = plan_retention(store, policies)
        assert len(plan.targets) == 6
        original = store.list_streams

        def listed_then_a_late_event() -> list:
            listing = original()  # what the plan sees
            store.append("sensor-2", [NewEvent("Reading", {"late": True})])  # a writer, just after
            return listing

        store.list_streams = listed_then_a_late_event  # type: ignore[method-assign]
        seen: list[tuple[int, int]] = []
        result = apply_retention(store, policies, batch_size=4,
                                 progress=lambda done, total: seen.append((done, total)))
        del store.list_streams
        assert (result.deleted_streams, result.skipped) == (5, 1)
        assert seen == [(4, 6), (6, 6)]
        assert store.head_version("sensor-2") == 3  # untouched, with its late event
        assert store.restore_stream("sensor-0")  # soft: restorable


def test_policies_are_checked_with_typed_errors() -> None:
    for bad in ({"prefix": "", "max_age": timedelta(1)},
                {"prefix": "\ud800", "max_age": timedelta(1)},
                {"prefix": "a", "max_age": 3}, {"prefix": "a", "max_age": -timedelta(1)},
                {"prefix": "a", "max_age": timedelta(1), "hard": "yes"}):
        with pytest.raises(InvalidInputError):
            RetentionPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        load_policies("/nonexistent/policy.json")
    with pytest.raises(InvalidInputError):
        plan_retention(object(), [], now=datetime.now(UTC))


def test_plan_and_apply_truncate_with_a_snapshot_and_refuse_without_one(
    tmp_path: Path,
) -> None:
    from eskit import SQLiteSnapshotStore
    from eskit.snapshots import Snapshot

    db = tmp_path / "events.db"
    with SQLiteEventStore(db) as store:
        for name in ("order-1", "order-2"):
            store.append(name, [NewEvent("Placed", {"n": n}) for n in range(6)])
        last = store.read_stream("order-1")[-1]
        SQLiteSnapshotStore(store).save(Snapshot(  # only order-1 has one, at its head
            "order-1", "Order", 6, last.event_id, 1, b"{}", datetime.now(UTC)))
    policy = _policy_file(tmp_path, [{"prefix": "order-", "max_events": 2}])
    plan = eskit_cli("retention", "plan", str(db), "--policy", str(policy))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    table = {r[0]: r[1:] for r in rows(plan.stdout)}
    assert table["order-"][5:7] == ["2", "8"]  # truncate streams, events
    applied = eskit_cli("retention", "apply", str(db), "--policy", str(policy))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    said = " ".join(applied.stdout.split())
    assert "1 streams truncated (4 events removed)" in said
    assert "1 not truncated" in said
    forced = eskit_cli("retention", "apply", str(db), "--policy", str(policy), "--force")
    assert "1 streams truncated (4 events removed)" in " ".join(forced.stdout.split())
    with SQLiteEventStore(db) as store:
        assert [e.version for e in store.read_stream("order-1")] == [5, 6]
        assert [e.version for e in store.read_stream("order-2")] == [5, 6]
