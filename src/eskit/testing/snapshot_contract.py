"""The contract every snapshot store passes, as a reusable pytest suite.

A backend's test module subclasses :class:`SnapshotStoreContract` and says how to
make a fresh event store and the snapshot store beside it::

    class TestMySnapshots(SnapshotStoreContract):
        def create_stores(self, tmp_path, *, keep=None):
            events = MyEventStore(tmp_path / "events.db")
            return events, MySnapshotStore(events, keep=keep)

``keep`` is the store's automatic pruning option (``None``: saves never prune);
the pruning cases pass it, the others leave it out.

Test names state the guarantee they check (see :class:`eskit.SnapshotStore`).
"""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from eskit import EventStore, InvalidInputError, NewEvent, Snapshot, SnapshotStore, codec
from eskit.events import MAX_NAME_BYTES
from eskit.snapshots import MAX_TYPE_NAME_BYTES, PruneProgress

__all__ = ["SnapshotStoreContract"]

TYPE = "contract.Account"
Stores = tuple[EventStore, SnapshotStore]


def _fill(events: EventStore, stream: Any, n: int) -> list[uuid.UUID]:
    """Append ``n`` events to ``stream``; return their ids in version order."""
    result = events.append(stream, [NewEvent("Happened", {"i": i}) for i in range(n)])
    return [e.event_id for e in result.events]


def _snapshot(
    stream: Any, version: int, event_id: uuid.UUID, state: Any = None, *,
    aggregate_type: str = TYPE, state_version: int = 1,
) -> Snapshot:
    return Snapshot(
        aggregate_id=stream, aggregate_type=aggregate_type, version=version, event_id=event_id,
        state_version=state_version,
        state=codec.encode({"version_seen": version} if state is None else state),
        taken_at=datetime(2025, 6, 1, 8, 30, 15, 123456, tzinfo=UTC),
    )


class ReadThrough(EventStore):
    """Another event store object over the same events: it only forwards ``read_stream``."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.reads: list[tuple[int, int | None]] = []

    def read_stream(
        self, stream_id: Any, from_version: int = 0, to_version: int | None = None,
        **options: Any,
    ) -> Any:
        self.reads.append((from_version, to_version))
        return self.inner.read_stream(stream_id, from_version, to_version, **options)


class SnapshotStoreContract:
    """The guarantees of :class:`eskit.SnapshotStore`. Subclass and implement ``create_stores``."""

    def create_stores(self, tmp_path: Path, *, keep: int | None = None) -> Stores:
        raise NotImplementedError("a contract test class must implement create_stores")

    @pytest.fixture
    def stores(self, tmp_path: Path) -> Iterator[Stores]:
        events, snapshots = self.create_stores(tmp_path)
        try:
            yield events, snapshots
        finally:
            snapshots.close()
            events.close()

    @pytest.fixture
    def keeping(self, tmp_path: Path) -> Iterator[Any]:
        """A factory of stores whose saves prune to ``keep``; closes what it made."""
        made: list[Stores] = []

        def make(keep: int) -> Stores:
            made.append(self.create_stores(tmp_path / f"keep{len(made)}", keep=keep))
            return made[-1]

        try:
            yield make
        finally:
            for events, snapshots in made:
                snapshots.close()
                events.close()

    # -- saving and loading ------------------------------------------------------------

    def test_a_saved_snapshot_comes_back_byte_for_byte(self, stores: Stores) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 3)
        state = {"balance": "12.50", "note": "zoë \u202e 'quoted'; --", "nul": "a\x00b"}
        saved = _snapshot("acc-1", 3, ids[2], state, state_version=7)
        snapshots.save(saved)
        loaded = snapshots.latest("acc-1", TYPE)
        assert loaded == saved
        assert loaded is not None
        assert loaded.taken_at.tzinfo is not None
        assert loaded.taken_at.utcoffset() == timedelta(0)

    def test_the_events_loaded_with_a_snapshot_keep_their_tags(self, stores: Stores) -> None:
        events, snapshots = stores
        stored = events.append("acc-1", [
            NewEvent("Opened", {}, tags=("customer:1",)),
            NewEvent("Deposited", {}, tags=("customer:1", "branch:x")),
            NewEvent("Noted", {}),
            NewEvent("Deposited", {}, tags=("branch:y",)),
        ]).events
        events.append("acc-2", [NewEvent("Other", {}, tags=("customer:2",))])
        snapshots.save(_snapshot("acc-1", 2, stored[1].event_id))
        found, tail = snapshots.latest_with_tail("acc-1", TYPE, events=events)
        assert found is not None
        assert [(e.version, e.tags) for e in tail] == [
            (2, ("customer:1", "branch:x")), (3, ()), (4, ("branch:y",))]
        none, whole = snapshots.latest_with_tail("acc-2", TYPE, events=events)
        assert none is None
        assert [e.tags for e in whole] == [("customer:2",)]

    def test_latest_is_the_highest_version_at_or_below_the_bound(self, stores: Stores) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 30)
        for version in (20, 5, 10):  # saved out of order on purpose
            snapshots.save(_snapshot("acc-1", version, ids[version - 1]))
        found = snapshots.latest("acc-1", TYPE)
        assert found is not None
        assert found.version == 20
        assert [getattr(snapshots.latest("acc-1", TYPE, bound), "version", None)
                for bound in (4, 5, 9, 10, 19, 20, 30)] == [None, 5, 5, 10, 10, 20, 20]

    def test_an_aggregate_without_snapshots_has_none(self, stores: Stores) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 2)
        snapshots.save(_snapshot("acc-1", 2, ids[1]))
        assert snapshots.latest("acc-2", TYPE) is None
        assert snapshots.latest("acc-1", "contract.Other") is None
        assert snapshots.latest("acc-1", TYPE, 1) is None
        assert snapshots.latest("acc-1", TYPE, 0) is None

    def test_two_aggregate_types_on_one_stream_keep_separate_snapshots(
        self, stores: Stores
    ) -> None:
        events, snapshots = stores
        ids = _fill(events, "shared", 4)
        snapshots.save(_snapshot("shared", 2, ids[1], {"kind": "a"}, aggregate_type="a.A"))
        snapshots.save(_snapshot("shared", 4, ids[3], {"kind": "b"}, aggregate_type="b.B"))
        a, b = snapshots.latest("shared", "a.A"), snapshots.latest("shared", "b.B")
        assert a is not None
        assert codec.decode(a.state) == {"kind": "a"}
        assert b is not None
        assert codec.decode(b.state) == {"kind": "b"}

    def test_saving_again_at_the_same_version_replaces_the_snapshot(self, stores: Stores) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 2)
        snapshots.save(_snapshot("acc-1", 2, ids[1], {"n": 1}, state_version=1))
        snapshots.save(_snapshot("acc-1", 2, ids[1], {"n": 2}, state_version=2))
        found = snapshots.latest("acc-1", TYPE)
        assert found is not None
        assert (found.state_version, codec.decode(found.state)) == (2, {"n": 2})
        assert snapshots.latest("acc-1", TYPE, 1) is None

    def test_a_uuid_stream_is_found_by_its_uuid_and_its_text(self, stores: Stores) -> None:
        events, snapshots = stores
        stream = uuid.uuid4()
        ids = _fill(events, stream, 1)
        snapshots.save(_snapshot(stream, 1, ids[0]))
        by_uuid = snapshots.latest(stream, TYPE)
        by_text = snapshots.latest(str(stream), TYPE)
        assert by_uuid is not None
        assert by_uuid.aggregate_id == stream
        assert by_text is not None
        assert by_text.aggregate_id == str(stream)

    def test_hostile_names_round_trip_exactly(self, stores: Stores) -> None:
        events, snapshots = stores
        stream = "evil'); DROP TABLE eskit_snapshots; --\u202e$$ zoë"
        kind = "x\"y'z;--$$ \u05d0 " + "k" * 400
        ids = _fill(events, stream, 1)
        snapshots.save(_snapshot(stream, 1, ids[0], aggregate_type=kind))
        found = snapshots.latest(stream, kind)
        assert found is not None
        assert (found.aggregate_id, found.aggregate_type) == (stream, kind)

    def test_names_at_their_maximum_lengths_round_trip_and_one_byte_more_is_refused(
        self, stores: Stores
    ) -> None:
        events, snapshots = stores
        rng = random.Random(7)  # random text does not compress: full size in any index
        stream = "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(MAX_NAME_BYTES))
        kind = "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(MAX_TYPE_NAME_BYTES))
        ids = _fill(events, stream, 1)
        snapshots.save(_snapshot(stream, 1, ids[0], aggregate_type=kind))
        found = snapshots.latest(stream, kind)
        assert found is not None
        assert (found.aggregate_id, found.aggregate_type) == (stream, kind)
        with pytest.raises(InvalidInputError, match="512 bytes"):
            snapshots.save(_snapshot(stream, 1, ids[0], aggregate_type=kind + "x"))
        with pytest.raises(InvalidInputError, match="512 bytes"):
            snapshots.latest(stream, kind + "x")

    def test_a_large_state_round_trips(self, stores: Stores) -> None:
        events, snapshots = stores
        ids = _fill(events, "big", 1)
        state = {f"k{i}": "v" * 100 for i in range(10_000)}  # about 1 MB
        snapshots.save(_snapshot("big", 1, ids[0], state))
        found = snapshots.latest("big", TYPE)
        assert found is not None
        assert codec.decode(found.state) == state

    # -- the snapshot and its tail in one request -------------------------------------------

    def test_latest_with_tail_gives_the_snapshot_and_the_events_from_its_own_version(
        self, stores: Stores
    ) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 30)
        for version in (10, 20):
            snapshots.save(_snapshot("acc-1", version, ids[version - 1]))
        for bound, snapshot_version, first in ((None, 20, 20), (30, 20, 20), (25, 20, 20),
                                               (19, 10, 10), (10, 10, 10), (9, None, 1)):
            snapshot, tail = snapshots.latest_with_tail("acc-1", TYPE, bound, events=events)
            assert getattr(snapshot, "version", None) == snapshot_version, bound
            last = 30 if bound is None else bound
            assert [e.version for e in tail] == list(range(first, last + 1)), bound
            assert [e.event_id for e in tail] == ids[first - 1 : last]
            assert tail == events.read_stream("acc-1", first - 1, bound)

    def test_latest_with_tail_of_an_unknown_stream_is_nothing(self, stores: Stores) -> None:
        events, snapshots = stores
        assert snapshots.latest_with_tail("nobody", TYPE, events=events) == (None, [])

    def test_latest_with_tail_reads_any_event_store_it_is_given(self, stores: Stores) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 12)
        snapshots.save(_snapshot("acc-1", 8, ids[7]))
        elsewhere = ReadThrough(events)  # not the store it sits beside: two calls
        assert snapshots.latest_with_tail("acc-1", TYPE, events=elsewhere) == (
            snapshots.latest_with_tail("acc-1", TYPE, events=events)
        )
        assert elsewhere.reads == [(7, None)]

    # -- never above the head ------------------------------------------------------------

    def test_a_snapshot_above_the_stream_head_is_refused_and_not_stored(
        self, stores: Stores
    ) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 2)
        with pytest.raises(InvalidInputError, match="must follow a stored event"):
            snapshots.save(_snapshot("acc-1", 3, ids[1]))
        with pytest.raises(InvalidInputError):
            snapshots.save(_snapshot("never-written", 1, uuid.uuid4()))
        assert snapshots.latest("acc-1", TYPE) is None
        assert snapshots.latest("never-written", TYPE) is None

    def test_a_snapshot_naming_another_event_at_its_version_is_refused(
        self, stores: Stores
    ) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 2)
        with pytest.raises(InvalidInputError):
            snapshots.save(_snapshot("acc-1", 2, ids[0]))  # the id of version 1
        with pytest.raises(InvalidInputError):
            snapshots.save(_snapshot("acc-1", 2, uuid.uuid4()))
        assert snapshots.latest("acc-1", TYPE) is None

    @pytest.mark.parametrize(
        "change",
        [
            {"aggregate_id": ""},
            {"aggregate_id": 7},
            {"aggregate_type": ""},
            {"aggregate_type": None},
            {"version": 0},
            {"version": -1},
            {"version": "1"},
            {"event_id": "not-a-uuid"},
            {"state_version": 0},
            {"state_version": True},
            {"state": "text, not bytes"},
            {"taken_at": datetime(2025, 1, 1)},
            {"taken_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
        ],
        ids=lambda change: "-".join(f"{k}={v!r}" for k, v in change.items()),
    )
    def test_a_malformed_snapshot_is_invalid_input(
        self, stores: Stores, change: dict[str, Any]
    ) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 1)
        with pytest.raises(InvalidInputError):
            snapshots.save(replace(_snapshot("acc-1", 1, ids[0]), **change))
        assert snapshots.latest("acc-1", TYPE) is None

    @pytest.mark.parametrize(
        "args", [("", TYPE, None), ("s", "", None), ("s", TYPE, -1), ("s", TYPE, "2")]
    )
    def test_bad_latest_arguments_are_invalid_input(self, stores: Stores, args: Any) -> None:
        _, snapshots = stores
        with pytest.raises(InvalidInputError):
            snapshots.latest(*args)

    def test_taken_at_in_any_zone_comes_back_as_the_same_moment_in_utc(
        self, stores: Stores
    ) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 1)
        moment = datetime(2025, 6, 1, 10, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
        snapshots.save(replace(_snapshot("acc-1", 1, ids[0]), taken_at=moment))
        found = snapshots.latest("acc-1", TYPE)
        assert found is not None
        assert found.taken_at == moment
        assert found.taken_at.utcoffset() == timedelta(0)

    # -- concurrency ---------------------------------------------------------------------

    def test_threads_saving_snapshots_of_one_aggregate_lose_nothing(self, stores: Stores) -> None:
        events, snapshots = stores
        ids = _fill(events, "busy", 40)
        errors: list[BaseException] = []

        def saver(offset: int) -> None:
            try:
                for version in range(1 + offset, 41, 4):
                    snapshots.save(_snapshot("busy", version, ids[version - 1]))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=saver, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for bound in (1, 17, 40):
            found = snapshots.latest("busy", TYPE, bound)
            assert found is not None
            assert found.version == bound
            assert found.event_id == ids[bound - 1]

    # -- pruning ---------------------------------------------------------------------------

    def _versions(self, snapshots: SnapshotStore, stream: Any, head: int,
                  aggregate_type: str = TYPE) -> list[int]:
        """The versions stored for an aggregate, found through ``latest`` alone."""
        found: list[int] = []
        bound = head
        while bound >= 1:
            snapshot = snapshots.latest(stream, aggregate_type, bound)
            if snapshot is None:
                break
            found.append(snapshot.version)
            bound = snapshot.version - 1
        return sorted(found)

    def test_a_store_with_keep_keeps_the_newest_n_after_every_save(self, keeping: Any) -> None:
        events, snapshots = keeping(3)
        ids = _fill(events, "acc-1", 10)
        for version in range(1, 11):
            snapshots.save(_snapshot("acc-1", version, ids[version - 1]))
            assert self._versions(snapshots, "acc-1", 10) == list(
                range(max(1, version - 2), version + 1)
            )
        found = snapshots.latest("acc-1", TYPE)
        assert found is not None
        assert (found.version, found.event_id) == (10, ids[9])

    def test_a_snapshot_saved_below_the_newest_n_is_pruned_at_once(self, keeping: Any) -> None:
        events, snapshots = keeping(2)
        ids = _fill(events, "acc-1", 30)
        for version in (10, 20, 5):
            snapshots.save(_snapshot("acc-1", version, ids[version - 1]))
        assert self._versions(snapshots, "acc-1", 30) == [10, 20]
        snapshots.save(_snapshot("acc-1", 20, ids[19], {"replaced": True}))  # same version
        assert self._versions(snapshots, "acc-1", 30) == [10, 20]

    def test_saving_with_keep_never_touches_other_aggregates_or_types(
        self, keeping: Any
    ) -> None:
        events, snapshots = keeping(1)
        streams = ["acc-1", "acc-10", "acc-1-x", "ACC-1"]  # prefixes and case: not the same
        ids = {s: _fill(events, s, 5) for s in streams}
        for stream in streams[1:]:
            snapshots.save(_snapshot(stream, 2, ids[stream][1]))
        snapshots.save(_snapshot("acc-1", 2, ids["acc-1"][1], aggregate_type="other.Type"))
        for version in range(1, 6):
            snapshots.save(_snapshot("acc-1", version, ids["acc-1"][version - 1]))
        assert self._versions(snapshots, "acc-1", 5) == [5]
        assert self._versions(snapshots, "acc-1", 5, "other.Type") == [2]
        for stream in streams[1:]:
            assert self._versions(snapshots, stream, 5) == [2], stream

    def test_prune_keeps_the_newest_n_of_each_aggregate_and_type(self, stores: Stores) -> None:
        events, snapshots = stores
        ids = {s: _fill(events, s, 6) for s in ("acc-1", "acc-2", "acc-10")}
        for stream, stream_ids in ids.items():
            for version in range(1, 7):
                snapshots.save(_snapshot(stream, version, stream_ids[version - 1]))
        for version in (1, 3):
            snapshots.save(_snapshot("acc-1", version, ids["acc-1"][version - 1],
                                     aggregate_type="other.Type"))
        assert snapshots.prune(keep=2) == 3 * 4
        for stream in ids:
            assert self._versions(snapshots, stream, 6) == [5, 6], stream
        assert self._versions(snapshots, "acc-1", 6, "other.Type") == [1, 3]
        assert snapshots.prune(keep=2) == 0  # a second pass has nothing left to do

    def test_prune_runs_in_batches_and_reports_progress(self, stores: Stores) -> None:
        events, snapshots = stores
        for n in range(7):
            stream_ids = _fill(events, f"s-{n}", 4)
            for version in range(1, 5):
                snapshots.save(_snapshot(f"s-{n}", version, stream_ids[version - 1]))
        seen: list[PruneProgress] = []
        assert snapshots.prune(keep=1, batch_size=3, progress=seen.append) == 7 * 3
        assert [(p.aggregates, p.total_aggregates) for p in seen] == [(3, 7), (6, 7), (7, 7)]
        assert seen[-1].deleted == 21
        assert all(a.deleted <= b.deleted for a, b in itertools.pairwise(seen))

    def test_prune_to_zero_deletes_every_snapshot_and_the_events_still_load(
        self, stores: Stores
    ) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 12)
        for version in (4, 8, 12):
            snapshots.save(_snapshot("acc-1", version, ids[version - 1]))
        assert snapshots.prune(keep=0) == 3
        assert snapshots.latest("acc-1", TYPE) is None
        snapshot, tail = snapshots.latest_with_tail("acc-1", TYPE, events=events)
        assert snapshot is None
        assert [e.event_id for e in tail] == ids
        assert snapshots.prune(keep=0) == 0

    def test_prune_of_a_store_without_snapshots_deletes_nothing(self, stores: Stores) -> None:
        _, snapshots = stores
        seen: list[PruneProgress] = []
        assert snapshots.prune(progress=seen.append) == 0
        assert seen == []

    @pytest.mark.parametrize(
        "kwargs", [{"keep": -1}, {"keep": True}, {"keep": "3"}, {"keep": 1.5},
                   {"batch_size": 0}, {"batch_size": True}, {"batch_size": 10**7}],
        ids=repr,
    )
    def test_bad_prune_arguments_are_invalid_input_and_delete_nothing(
        self, stores: Stores, kwargs: dict[str, Any]
    ) -> None:
        events, snapshots = stores
        ids = _fill(events, "acc-1", 2)
        for version in (1, 2):
            snapshots.save(_snapshot("acc-1", version, ids[version - 1]))
        with pytest.raises(InvalidInputError):
            snapshots.prune(**kwargs)
        assert self._versions(snapshots, "acc-1", 2) == [1, 2]

    @pytest.mark.parametrize("keep", [0, -1, True, "2"], ids=repr)
    def test_a_bad_keep_option_is_invalid_input(self, tmp_path: Path, keep: Any) -> None:
        with pytest.raises(InvalidInputError, match="keep"):
            self.create_stores(tmp_path, keep=keep)

    def test_threads_saving_with_keep_while_another_prunes_keep_the_newest(
        self, keeping: Any
    ) -> None:
        events, snapshots = keeping(3)
        ids = _fill(events, "busy", 40)
        other = _fill(events, "calm", 3)
        for version in (1, 2, 3):  # another aggregate: never below its newest 3
            snapshots.save(_snapshot("calm", version, other[version - 1]))
        errors: list[BaseException] = []
        done = threading.Event()

        def saver(offset: int) -> None:
            try:
                for version in range(1 + offset, 41, 4):
                    snapshots.save(_snapshot("busy", version, ids[version - 1]))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def pruner() -> None:
            try:
                while not done.is_set():
                    snapshots.prune(keep=3, batch_size=1)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        savers = [threading.Thread(target=saver, args=(n,)) for n in range(4)]
        pruning = threading.Thread(target=pruner)
        pruning.start()
        for t in savers:
            t.start()
        for t in savers:
            t.join()
        done.set()
        pruning.join()
        assert errors == []
        # Nothing deletes one of the three highest versions: only rows below three newer go.
        assert self._versions(snapshots, "busy", 40)[-3:] == [38, 39, 40]
        snapshots.prune(keep=3)
        assert self._versions(snapshots, "busy", 40) == [38, 39, 40]
        assert self._versions(snapshots, "calm", 3) == [1, 2, 3]
        found = snapshots.latest("busy", TYPE)
        assert found is not None
        assert found.event_id == ids[39]
