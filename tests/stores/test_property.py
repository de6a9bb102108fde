"""Stateful property tests: random appends and reads against a pure-Python model.

Hypothesis drives random sequences of appends (fresh batches with every kind of
expected version, retries of earlier batches, reuse of stored event ids) and
reads (``read_stream`` with every option, ``read_all``, the heads) against both
:class:`eskit.InMemoryEventStore` and :class:`eskit.SQLiteEventStore` (a fresh
file per example). The model below is written from the contract in
``eskit.stores.base``, not from the stores' code:

* an append whose expectation matches and whose ids are all new stores the
  batch at consecutive versions after the head, at increasing positions;
* a batch whose ids are *all* stored already, in order, in this stream, at the
  place the expectation allows, is a retry: ``duplicate=True``, nothing stored;
* any other batch holding a stored id is a ``DuplicateEventError``;
* otherwise a mismatched expectation is a ``ConcurrencyError``;
* whatever fails writes nothing.

Positions are taken from the append results (the contract allows gaps) and
then checked against every read.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

import eskit
from eskit import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyError,
    DuplicateEventError,
    Event,
    ExpectedVersion,
    InMemoryEventStore,
    MultiStreamConcurrencyError,
    NewEvent,
    SQLiteEventStore,
    StreamAppend,
)

# --------------------------------------------------------------------------- strategies

STREAMS: list[eskit.StreamId] = [
    "orders-1",
    UUID("6f1c2a9e-3b7d-4c1e-9a55-0d2b8e7f4a10"),
    "Ünïcødé-流-🎉",
    "it's; --\"quoted\" $$ \u200f",
    "s",
]
EVENT_TYPES = ["Created", "Ünïcode.Happened ✓", "x", "Order.Line'Added;--"]
MODES = ["exact", "wrong", ANY, NO_STREAM, STREAM_EXISTS]

keys = st.text(max_size=6) | st.sampled_from(["__eskit__", "amount", "ключ", "😀", ""])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.decimals()
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=6,
)
payloads = st.dictionaries(keys, values, max_size=3)
metadatas = st.dictionaries(st.sampled_from(["user", "corr", "ключ"]), scalars, max_size=1)
timestamps = st.none() | st.datetimes(
    min_value=datetime(1900, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))]),
)
specs = st.tuples(st.sampled_from(EVENT_TYPES), payloads, metadatas, timestamps)
batch_specs = st.lists(specs, min_size=1, max_size=5)


# --------------------------------------------------------------------------- exact equality


def same(a: Any, b: Any) -> bool:
    """Equality that also demands equal types (no Decimal -> float, no tuple -> list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def key_of(stream_id: eskit.StreamId) -> str:
    return str(stream_id)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelEvent:
    event_id: UUID
    stream_id: eskit.StreamId
    event_type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    timestamp: datetime | None
    version: int
    position: int


@dataclass(frozen=True)
class StoredBatch:
    stream_id: eskit.StreamId
    expected: int | ExpectedVersion
    events: tuple[NewEvent, ...]


class StoreMachine(RuleBasedStateMachine):
    """The model and the rules; subclasses say which store to test."""

    MULTI = False
    """Whether the append_many rules run (a subclass each, to keep the run short)."""

    def make_store(self) -> eskit.EventStore:
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.store = self.make_store()
        self.log: list[ModelEvent] = []
        self.by_id: dict[UUID, ModelEvent] = {}
        self.batches: list[StoredBatch] = []
        self.calls: list[list[StoredBatch]] = []  # stored append_many calls
        self._next_id = 0

    def teardown(self) -> None:
        self.store.close()

    # -- model helpers ------------------------------------------------------------------

    def fresh_id(self) -> UUID:
        # Deterministic and unique within an example, so Hypothesis can replay it.
        self._next_id += 1
        return UUID(int=(0xE5 << 120) | self._next_id)

    def stream_events(self, stream_id: eskit.StreamId) -> list[ModelEvent]:
        key = key_of(stream_id)
        return [e for e in self.log if key_of(e.stream_id) == key]

    def head(self, stream_id: eskit.StreamId) -> int:
        events = self.stream_events(stream_id)
        return events[-1].version if events else 0

    def head_position(self) -> int:
        return self.log[-1].position if self.log else 0

    def expected_for(self, mode: object, stream_id: eskit.StreamId, data: st.DataObject) -> Any:
        head = self.head(stream_id)
        if mode == "exact":
            return head
        if mode == "wrong":
            drawn = data.draw(st.integers(0, head + 2), "wrong")
            return drawn if drawn < head else drawn + 1
        return mode

    @staticmethod
    def matches(expected: Any, head: int) -> bool:
        if expected is ANY:
            return True
        if expected is NO_STREAM:
            return head == 0
        if expected is STREAM_EXISTS:
            return head > 0
        return bool(head == expected)

    def predict(self, stream_id: eskit.StreamId, expected: Any, ids: list[UUID]) -> tuple[str, Any]:
        found = [self.by_id.get(i) for i in ids]
        head = self.head(stream_id)
        if all(f is None for f in found):
            return ("ok", None) if self.matches(expected, head) else ("conflict", head)
        first = found[0]
        complete = first is not None and all(
            f is not None
            and key_of(f.stream_id) == key_of(stream_id)
            and f.version == first.version + i
            for i, f in enumerate(found)
        )
        if complete and first is not None:
            place_ok = (
                expected is ANY
                or expected is STREAM_EXISTS
                or (expected is NO_STREAM and first.version == 1)
                or (isinstance(expected, int) and first.version == expected + 1)
            )
            if place_ok:
                return "retry", found
        return "duplicate_id", None

    # -- checks -------------------------------------------------------------------------

    def check_event(self, got: Event, want: ModelEvent, *, from_read_all: bool) -> None:
        assert got.event_id == want.event_id
        assert key_of(got.aggregate_id) == key_of(want.stream_id)
        if from_read_all or isinstance(want.stream_id, UUID):
            assert type(got.aggregate_id) is type(want.stream_id)
        assert got.event_type == want.event_type
        assert same(got.event_data, want.data), (got.event_data, want.data)
        assert same(got.metadata, want.metadata), (got.metadata, want.metadata)
        assert got.version == want.version
        assert got.position == want.position
        assert got.timestamp.utcoffset() == timedelta(0)
        if want.timestamp is not None:
            assert got.timestamp == want.timestamp

    def attempt(
        self, stream_id: eskit.StreamId, events: list[NewEvent], expected: Any
    ) -> None:
        """Append, and check the outcome and the store against the model."""
        ids = [e.event_id for e in events]
        outcome, info = self.predict(stream_id, expected, ids)
        event(f"append outcome: {outcome}")
        position_before = self.store.head_position()
        assert position_before == self.head_position()
        count_before = len(self.log)
        if outcome == "ok":
            head = self.head(stream_id)
            result = self.store.append(stream_id, events, expected)
            assert result.duplicate is False
            assert result.version == head + len(events)
            assert [e.event_id for e in result.events] == ids
            assert [e.version for e in result.events] == list(
                range(head + 1, head + len(events) + 1)
            )
            positions = [e.position for e in result.events]
            assert all(isinstance(p, int) for p in positions)
            assert positions == sorted(set(positions))
            assert positions[0] > position_before
            assert result.position == positions[-1]
            for new, got in zip(events, result.events, strict=True):
                model = ModelEvent(
                    new.event_id, stream_id, new.event_type, new.event_data, new.metadata,
                    new.timestamp, got.version, got.position or 0,
                )
                self.check_event(got, model, from_read_all=False)
                self.log.append(model)
                self.by_id[model.event_id] = model
            self.batches.append(StoredBatch(stream_id, expected, tuple(events)))
            assert self.store.head_position() == positions[-1]
            return
        if outcome == "retry":
            result = self.store.append(stream_id, events, expected)
            assert result.duplicate is True
            assert len(result.events) == len(info)
            for got, want in zip(result.events, info, strict=True):
                self.check_event(got, want, from_read_all=False)
            assert result.version == info[-1].version
            assert result.position == info[-1].position
        elif outcome == "conflict":
            with pytest.raises(ConcurrencyError) as conflict:
                self.store.append(stream_id, events, expected)
            assert conflict.value.actual_version == info
            assert isinstance(conflict.value, ValueError)  # seed code catches ValueError
        else:
            with pytest.raises(DuplicateEventError) as duplicate:
                self.store.append(stream_id, events, expected)
            assert duplicate.value.event_id in self.by_id
        # Nothing may have been written.
        assert self.store.head_position() == position_before
        assert len(self.log) == count_before
        assert self.store.head_version(stream_id) == self.head(stream_id)

    def new_events(self, batch: list[tuple[str, dict[str, Any], dict[str, Any], Any]]) -> list[
        NewEvent
    ]:
        return [
            NewEvent(event_type=t, event_data=d, metadata=m, event_id=self.fresh_id(), timestamp=ts)
            for t, d, m, ts in batch
        ]

    # -- writes -------------------------------------------------------------------------

    @rule(
        stream_id=st.sampled_from(STREAMS),
        batch=batch_specs,
        mode=st.sampled_from(MODES),
        data=st.data(),
    )
    def append_new(self, stream_id, batch, mode, data):
        expected = self.expected_for(mode, stream_id, data)
        self.attempt(stream_id, self.new_events(batch), expected)

    @rule(
        stream_id=st.sampled_from(STREAMS[:2]),
        batch=batch_specs,
        mode=st.sampled_from(["exact", ANY]),
        data=st.data(),
    )
    def append_more(self, stream_id, batch, mode, data):
        """Like append_new, weighted towards success on two streams so that they grow long."""
        self.append_new(stream_id, batch, mode, data)

    @precondition(lambda self: self.batches)
    @rule(data=st.data(), rebuild=st.booleans())
    def retry_batch(self, data, rebuild):
        """A retried request: the same ids at the same place succeed and store nothing."""
        stored = data.draw(st.sampled_from(self.batches), "batch")
        events = list(stored.events)
        if rebuild:  # a retry after a restart rebuilds equal events
            events = [NewEvent(e.event_type, dict(e.event_data), dict(e.metadata), e.event_id,
                               e.timestamp) for e in events]
        assert self.predict(stored.stream_id, stored.expected, [e.event_id for e in events])[
            0
        ] == "retry"
        self.attempt(stored.stream_id, events, stored.expected)

    @precondition(lambda self: self.batches)
    @rule(data=st.data(), mode=st.sampled_from(MODES))
    def retry_elsewhere(self, data, mode):
        """The same batch sent to another stream is a DuplicateEventError."""
        stored = data.draw(st.sampled_from(self.batches), "batch")
        other = data.draw(
            st.sampled_from([s for s in STREAMS if key_of(s) != key_of(stored.stream_id)]),
            "stream",
        )
        expected = self.expected_for(mode, other, data)
        assert self.predict(other, expected, [e.event_id for e in stored.events])[0] == (
            "duplicate_id"
        )
        self.attempt(other, list(stored.events), expected)

    @precondition(lambda self: self.log)
    @rule(
        data=st.data(),
        stream_id=st.sampled_from(STREAMS),
        batch=st.lists(specs, min_size=1, max_size=4),
        mode=st.sampled_from(MODES),
    )
    def reuse_old_id(self, data, stream_id, batch, mode):
        """An old event id inside a new batch is a DuplicateEventError."""
        old = data.draw(st.sampled_from(self.log), "old event")
        events = self.new_events(batch)
        index = data.draw(st.integers(0, len(events)), "index")
        t, d, m, ts = data.draw(specs, "reused spec")
        events.insert(index, NewEvent(t, d, m, old.event_id, ts))
        expected = self.expected_for(mode, stream_id, data)
        assert self.predict(stream_id, expected, [e.event_id for e in events])[0] == (
            "duplicate_id"
        )
        self.attempt(stream_id, events, expected)

    # -- several streams in one call (append_many) ----------------------------------------

    def attempt_many(self, call: list[StoredBatch]) -> None:
        """append_many, checked against the model: each stream decided as a single append
        would be, and the call written whole only when every stream may be written.
        A reused id anywhere wins over conflicts; conflicts over a partial retry."""
        predictions = [
            self.predict(b.stream_id, b.expected, [e.event_id for e in b.events]) for b in call
        ]
        outcomes = [o for o, _ in predictions]
        event(f"append_many outcomes: {sorted(set(outcomes))}")
        position_before = self.store.head_position()
        count_before = len(self.log)
        appends = [StreamAppend(b.stream_id, list(b.events), b.expected) for b in call]
        if "duplicate_id" in outcomes or (
            "conflict" not in outcomes and "retry" in outcomes and "ok" in outcomes
        ):
            with pytest.raises(DuplicateEventError):
                self.store.append_many(appends)
        elif "conflict" in outcomes:
            with pytest.raises(MultiStreamConcurrencyError) as conflict:
                self.store.append_many(appends)
            assert [(key_of(c.stream_id), c.actual_version) for c in conflict.value.conflicts] == [
                (key_of(b.stream_id), info)
                for b, (o, info) in zip(call, predictions, strict=True) if o == "conflict"
            ]
        elif all(o == "retry" for o in outcomes):
            results = self.store.append_many(appends)
            for result, (_, info) in zip(results, predictions, strict=True):
                assert result.duplicate is True
                for got, want in zip(result.events, info, strict=True):
                    self.check_event(got, want, from_read_all=False)
        else:
            heads = [self.head(b.stream_id) for b in call]
            results = self.store.append_many(appends)
            positions = [e.position or 0 for r in results for e in r.events]
            assert positions == sorted(set(positions))
            assert positions[0] > position_before
            for b, head, result in zip(call, heads, results, strict=True):
                assert result.duplicate is False
                assert result.stream_id == b.stream_id
                assert [e.version for e in result.events] == list(
                    range(head + 1, head + len(b.events) + 1)
                )
                for new, got in zip(b.events, result.events, strict=True):
                    model = ModelEvent(
                        new.event_id, b.stream_id, new.event_type, new.event_data,
                        new.metadata, new.timestamp, got.version, got.position or 0,
                    )
                    self.check_event(got, model, from_read_all=False)
                    self.log.append(model)
                    self.by_id[model.event_id] = model
                self.batches.append(b)
            self.calls.append(call)
            assert self.store.head_position() == positions[-1]
            return
        assert self.store.head_position() == position_before
        assert len(self.log) == count_before
        for b in call:
            assert self.store.head_version(b.stream_id) == self.head(b.stream_id)

    @precondition(lambda self: self.MULTI)
    @rule(data=st.data(), count=st.integers(1, 3))
    def append_many_new(self, data, count):
        streams = data.draw(
            st.lists(st.sampled_from(STREAMS), min_size=count, max_size=count, unique_by=key_of),
            "streams",
        )
        call = []
        for stream_id in streams:
            # Short batches: the call's cost is in its streams, not in their lengths.
            batch = data.draw(st.lists(specs, min_size=1, max_size=2), "batch")
            mode = data.draw(st.sampled_from([*MODES, "exact", ANY]), "mode")
            expected = self.expected_for(mode, stream_id, data)
            call.append(StoredBatch(stream_id, expected, tuple(self.new_events(batch))))
        if self.log and data.draw(st.booleans(), "reuse a stored id"):
            old = data.draw(st.sampled_from(self.log), "old event")
            index = data.draw(st.integers(0, len(call) - 1), "stream")
            b = call[index]
            t, d, m, ts = data.draw(specs, "reused spec")
            call[index] = StoredBatch(b.stream_id, b.expected,
                                      (*b.events, NewEvent(t, d, m, old.event_id, ts)))
        self.attempt_many(call)

    @precondition(lambda self: self.MULTI and self.calls)
    @rule(data=st.data(), extend=st.booleans())
    def retry_many(self, data, extend):
        """A stored call again is a retry; with a new stream added it is not."""
        call = list(data.draw(st.sampled_from(self.calls), "call"))
        used = {key_of(b.stream_id) for b in call}
        others = [s for s in STREAMS if key_of(s) not in used]
        if extend and others:
            stream_id = data.draw(st.sampled_from(others), "new stream")
            call.append(StoredBatch(stream_id, ANY, tuple(self.new_events([("x", {}, {}, None)]))))
        self.attempt_many(call)

    # -- reads --------------------------------------------------------------------------

    @rule(
        stream_id=st.sampled_from(STREAMS),
        data=st.data(),
        backwards=st.booleans(),
        limit=st.none() | st.integers(0, 6),
    )
    def read_stream(self, stream_id, data, backwards, limit):
        head = self.head(stream_id)
        from_version = data.draw(st.just(0) | st.integers(0, head + 2), "from_version")
        to_version = data.draw(st.none() | st.integers(0, head + 2), "to_version")
        # Both directions every time; the drawn one first.
        for direction in (backwards, not backwards):
            want = [
                e for e in self.stream_events(stream_id)
                if e.version > from_version and (to_version is None or e.version <= to_version)
            ]
            if direction:
                want.reverse()
            if limit is not None:
                want = want[:limit]
            got = self.store.read_stream(
                stream_id, from_version, to_version, backwards=direction, limit=limit
            )
            assert len(got) == len(want), (len(got), len(want))
            for g, w in zip(got, want, strict=True):
                self.check_event(g, w, from_read_all=False)

    @rule(stream_id=st.sampled_from(STREAMS[:2]), data=st.data())
    def read_stream_page(self, stream_id, data):
        """Page through a long stream with limit, as a consumer would."""
        size = data.draw(st.integers(1, 4), "page size")
        backwards = data.draw(st.booleans(), "backwards")
        want = self.stream_events(stream_id)
        got: list[Event] = []
        if backwards:
            want = want[::-1]
            to_version = None
            while True:
                page = self.store.read_stream(
                    stream_id, 0, to_version, backwards=True, limit=size
                )
                assert len(page) <= size
                got.extend(page)
                if len(page) < size or page[-1].version == 1:
                    break
                to_version = page[-1].version - 1
        else:
            from_version = 0
            while True:
                page = self.store.read_stream(stream_id, from_version, limit=size)
                assert len(page) <= size
                got.extend(page)
                if len(page) < size:
                    break
                from_version = page[-1].version
        assert [g.event_id for g in got] == [w.event_id for w in want]
        for g, w in zip(got, want, strict=True):
            self.check_event(g, w, from_read_all=False)

    @rule(data=st.data(), limit=st.none() | st.integers(0, 10))
    def read_all(self, data, limit):
        known = [0] + [e.position for e in self.log]
        from_position = data.draw(
            st.sampled_from(known) | st.integers(0, self.head_position() + 3), "from_position"
        )
        want = [e for e in self.log if e.position > from_position]
        if limit is not None:
            want = want[:limit]
        got = list(self.store.read_all(from_position, limit))
        assert len(got) == len(want), (len(got), len(want))
        for g, w in zip(got, want, strict=True):
            self.check_event(g, w, from_read_all=True)

    @rule(stream_id=st.sampled_from(STREAMS))
    def head_version(self, stream_id):
        assert self.store.head_version(stream_id) == self.head(stream_id)

    @rule()
    def everything(self):
        """The whole store, in global order, equals the model; positions strictly increase."""
        got = list(self.store.read_all())
        assert [g.event_id for g in got] == [e.event_id for e in self.log]
        for g, w in zip(got, self.log, strict=True):
            self.check_event(g, w, from_read_all=True)
        positions = [g.position for g in got]
        assert positions == sorted(set(positions))  # type: ignore[type-var]
        for stream_id in STREAMS:
            versions = [e.version for e in self.store.read_stream(stream_id)]
            assert versions == list(range(1, len(versions) + 1))

    @invariant()
    def heads_agree(self):
        assert self.store.head_position() == self.head_position()


class MemoryMachine(StoreMachine):
    def make_store(self) -> eskit.EventStore:
        return InMemoryEventStore()


class SQLiteMachine(StoreMachine):
    def make_store(self) -> eskit.EventStore:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="eskit-prop-"))
        self.path = self.tmpdir / "events.db"
        return SQLiteEventStore(self.path)

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    @rule()
    def reopen(self):
        """A new store instance on the same file sees exactly the same events."""
        self.store.close()
        self.store = SQLiteEventStore(self.path)


class MemoryMultiMachine(MemoryMachine):
    """append_many among the other rules, on the store the model was written for."""

    MULTI = True


class SQLiteMultiMachine(SQLiteMachine):
    """append_many among the other rules on SQLite, whose refusals take their own path
    (insert first, then roll back and decide). ``synchronous=NORMAL``: the logic is
    under test here, not durability, and a sync per commit would dominate the run."""

    MULTI = True

    def make_store(self) -> eskit.EventStore:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="eskit-prop-"))
        self.path = self.tmpdir / "events.db"
        return SQLiteEventStore(self.path, synchronous="NORMAL")


_settings = dict(
    deadline=None,
    stateful_step_count=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

MemoryMachine.TestCase.settings = settings(max_examples=80, **_settings)  # type: ignore[arg-type]
SQLiteMachine.TestCase.settings = settings(max_examples=50, **_settings)  # type: ignore[arg-type]
# Fewer examples for the append_many machines: they add to the run, the rules they share
# with the machines above are covered there.
MemoryMultiMachine.TestCase.settings = settings(  # type: ignore[arg-type]
    max_examples=25, **_settings
)
SQLiteMultiMachine.TestCase.settings = settings(  # type: ignore[arg-type]
    max_examples=15, **_settings
)

TestInMemoryStoreAgainstModel = MemoryMachine.TestCase
TestSQLiteStoreAgainstModel = SQLiteMachine.TestCase
TestInMemoryAppendManyAgainstModel = MemoryMultiMachine.TestCase
TestSQLiteAppendManyAgainstModel = SQLiteMultiMachine.TestCase


# --------------------------------------------------------------------------- edge cases
#
# A retry is recognised only when every event of the batch is already stored,
# consecutively, with the same type and data, where the append would have put it
# (the contract suite pins those cases); anything else that touches stored ids is
# a DuplicateEventError and writes nothing.

STORE_FACTORIES = {
    "memory": lambda tmp: InMemoryEventStore(),
    "sqlite": lambda tmp: SQLiteEventStore(tmp / "edge.db"),
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def edge_store(request: Any, tmp_path: Path) -> Any:
    store = STORE_FACTORIES[request.param](tmp_path)
    yield store
    store.close()


@pytest.mark.parametrize("expected", [ANY, NO_STREAM, 3, STREAM_EXISTS])
def test_stored_and_new_ids_mixed_is_an_error(edge_store: Any, expected: Any) -> None:
    """A partial overlap (some ids stored, some new) is an error whatever the expectation."""
    a, b, c = NewEvent("A"), NewEvent("B"), NewEvent("C")
    edge_store.append("p", [a, b, c], NO_STREAM)
    before = edge_store.head_position()
    for batch in ([c, NewEvent("D")], [NewEvent("D"), a], [a, b, c, NewEvent("D")]):
        with pytest.raises(DuplicateEventError):
            edge_store.append("p", batch, expected)
    assert edge_store.head_position() == before
    assert [e.event_type for e in edge_store.read_stream("p")] == ["A", "B", "C"]
