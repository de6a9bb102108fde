"""The compression contract: large payloads stored compressed read back identical.

Subclass :class:`CompressionContract` and implement ``create_store`` (honouring
``compress_threshold``), ``is_stored_compressed`` and ``corrupt_payload``; the
cases run against any store that compresses (see docs/storage.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from eskit import (
    DecodingError,
    Event,
    EventStore,
    InvalidInputError,
    NewEvent,
    UndecodableEvent,
    compact,
)

__all__ = ["CompressionContract", "large_payload"]


def large_payload(n: int = 0, lines: int = 40) -> dict[str, Any]:
    """An order of ``lines`` lines (about 100 bytes each) with values JSON alone
    cannot carry: Decimals, ints beyond 64 bits, datetimes, and unicode."""
    return {
        "order": f"order-{n}",
        "placed": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "total": Decimal("12345678901234567890.123456789"),
        "big": 2**200 + n,
        "note": "naïve café ☕ 𝄞 日本語 \u0000 tab\t",
        "lines": [
            {"sku": f"SKU-{i:05d}", "qty": i, "price": Decimal(f"{i}.99"),
             "name": f"item {i} ünïcödé"}
            for i in range(lines)
        ],
    }


def _shape(event: Event | UndecodableEvent) -> tuple[Any, ...]:
    if isinstance(event, UndecodableEvent):
        return ("undecodable", event.event_id, event.version)
    return (event.event_id, str(event.aggregate_id), event.event_type, event.version,
            event.schema_version, event.event_data, event.metadata)


class CompressionContract:
    """What a store that compresses guarantees. Cases need no server of their own."""

    def create_store(self, tmp_path: Path, compress_threshold: int | None) -> EventStore:
        raise NotImplementedError

    def is_stored_compressed(self, store: EventStore, event: Event) -> bool:
        """Whether ``event`` is stored as a zstd frame (read straight from the backend)."""
        raise NotImplementedError

    def corrupt_payload(self, store: EventStore, event: Event, stored: bytes) -> None:
        """Overwrite the stored (uncompressed) payload of ``event`` with the frame ``stored``,
        bypassing eskit."""
        raise NotImplementedError

    def set_threshold(self, store: EventStore, threshold: int | None) -> None:
        """Change the store's ``compress_threshold`` (for the store under a wrapper)."""
        store.compress_threshold = threshold  # type: ignore[attr-defined]

    def run_compact(self, store: EventStore, **options: Any) -> Any:
        """:func:`eskit.compact` on ``store`` (or on a sync store on the same data)."""
        return compact(store, **options)

    def subscribed(self, store: EventStore, count: int) -> list[Event | UndecodableEvent]:
        """The first ``count`` events a subscription from the start delivers."""
        sub = store.subscribe(poll_interval=0.01)
        try:
            return list(itertools.islice(iter(sub), count))
        finally:
            sub.stop()

    @pytest.fixture
    def stores(self, tmp_path: Path) -> Iterator[tuple[EventStore, EventStore]]:
        """The same backend twice: compressing everything it can, and never."""
        on = self.create_store(tmp_path / "on", 1)
        off = self.create_store(tmp_path / "off", None)
        try:
            yield on, off
        finally:
            on.close()
            off.close()

    def _fill(self, store: EventStore) -> None:
        # Fixed ids, so that two stores filled alike hold the same events.
        def new(event_type: str, data: dict[str, Any], n: int, **meta: Any) -> NewEvent:
            return NewEvent(event_type, data, meta, event_id=UUID(int=n + 1))

        store.append("order-1", [new("Placed", large_payload(1), 1, by="ann")], 0)
        store.append("order-2", [new("Small", {"n": 1}, 2), new("Placed", large_payload(2), 3)], 0)
        store.append("order-1", [new("Shipped", large_payload(3, lines=5), 4)], 1)

    def test_large_payloads_round_trip_exactly_and_are_stored_compressed(
        self, stores: tuple[EventStore, EventStore]
    ) -> None:
        on, _ = stores
        self._fill(on)
        [placed, shipped] = on.read_stream("order-1")
        assert placed.event_data == large_payload(1)
        assert type(placed.event_data["total"]) is Decimal
        assert type(placed.event_data["placed"]) is datetime
        assert placed.metadata == {"by": "ann"}
        assert shipped.event_data == large_payload(3, lines=5)
        assert self.is_stored_compressed(on, placed)

    def test_every_read_path_returns_identical_events_with_compression_on_and_off(
        self, stores: tuple[EventStore, EventStore]
    ) -> None:
        on, off = stores
        for store in stores:
            self._fill(store)
        stored = on.read_stream("order-2")
        assert not self.is_stored_compressed(off, off.read_stream("order-2")[1])
        assert self.is_stored_compressed(on, stored[1])
        # The tiny event gains nothing from a frame: it stays JSON even at threshold 1.
        assert not self.is_stored_compressed(on, stored[0])

        def reads(store: EventStore) -> list[list[tuple[Any, ...]]]:
            all_events = list(store.read_all())
            second = all_events[1].position or 0
            subscribed = self.subscribed(store, len(all_events))
            views: list[Sequence[Event | UndecodableEvent]] = [
                store.read_stream("order-1"),
                store.read_stream("order-1", backwards=True),
                store.read_stream("order-1", 1, 2),
                store.read_stream("order-2", limit=1),
                list(store.iter_stream("order-2")),
                all_events,
                list(store.read_all(second)),
                list(store.read_all(limit=2)),
                list(store.read_all(on_undecodable="yield")),
                subscribed,
            ]
            return [[_shape(e) for e in view] for view in views]

        assert reads(on) == reads(off)
        # Time travel: the stream as of a moment reads the same.
        now = datetime.now(UTC) + timedelta(seconds=1)
        assert on.version_at("order-1", now) == off.version_at("order-1", now) == 2

    def test_duplicates_are_detected_whether_or_not_the_stored_copy_is_compressed(
        self, stores: tuple[EventStore, EventStore]
    ) -> None:
        for store in stores:
            batch = [NewEvent("Placed", large_payload(7)), NewEvent("Small", {"n": 1})]
            first = store.append("order-7", batch, 0)
            # The same events again, written the other way: still the same batch.
            threshold = 1 if store is stores[0] else None
            self.set_threshold(store, None if threshold else 1)
            try:
                again = store.append("order-7", batch, 0)
            finally:
                self.set_threshold(store, threshold)
            assert again.duplicate is True
            assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
            assert store.head_version("order-7") == 2

    def test_the_size_limit_counts_the_uncompressed_payload(self, tmp_path: Path) -> None:
        store = self.create_store(tmp_path, 1)
        try:
            limit = store.max_event_bytes
            huge = {"x": "a" * limit}  # compresses to a few hundred bytes
            with pytest.raises(InvalidInputError, match="over the limit"):
                store.append("big", [NewEvent("Huge", huge)], 0)
            assert store.head_version("big") == 0
        finally:
            store.close()

    def test_compact_compresses_old_events_and_running_it_twice_is_a_no_op(
        self, tmp_path: Path
    ) -> None:
        store = self.create_store(tmp_path, None)
        try:
            self._fill(store)
            before = [_shape(e) for e in store.read_all()]
            placed = store.read_stream("order-1")[0]
            assert not self.is_stored_compressed(store, placed)
            # Nothing is old enough yet.
            assert self.run_compact(store, older_than=timedelta(days=1)).compressed == 0
            first = self.run_compact(store, older_than=timedelta(0), batch_size=2)
            # The two events of at least 1024 bytes (the default threshold).
            assert (first.examined, first.compressed) == (2, 2)
            assert first.bytes_after * 3 < first.bytes_before
            assert self.is_stored_compressed(store, placed)
            assert [_shape(e) for e in store.read_all()] == before
            # A lower threshold takes "Shipped" too; "Small" would not shrink.
            lower = self.run_compact(store, older_than=timedelta(0), threshold=1)
            assert (lower.examined, lower.compressed) == (2, 1)
            second = self.run_compact(store, older_than=timedelta(0), threshold=1)
            assert second.compressed == 0
            assert [_shape(e) for e in store.read_all()] == before
        finally:
            store.close()

    def test_compact_refuses_bad_arguments_before_any_io(self, tmp_path: Path) -> None:
        store = self.create_store(tmp_path, None)
        try:
            for bad in ({"older_than": 5}, {"older_than": timedelta(-1)},
                        {"older_than": datetime(2020, 1, 1)},
                        {"older_than": timedelta(0), "batch_size": 0},
                        {"older_than": timedelta(0), "threshold": -3}):
                with pytest.raises(InvalidInputError):
                    self.run_compact(store, **bad)
        finally:
            store.close()

    def test_tags_are_kept_around_and_on_an_undecodable_event(self, tmp_path: Path) -> None:
        """A tolerant reader's page that breaks on a bad payload keeps every tag."""
        store = self.create_store(tmp_path, None)  # stored as text: corrupt_payload's input
        try:
            store.append("t-1", [NewEvent("E", {"n": n}, tags=(f"n:{n}",)) for n in range(3)])
            store.append("t-2", [NewEvent("F", {"n": 3}, tags=("n:3", "other"))])
            victim = store.read_stream("t-1")[1]
            self.corrupt_payload(store, victim, b"\x28\xb5\x2f\xfd" + b"\x00garbage" * 10)
            want = [("n:0",), ("n:1",), ("n:2",), ("n:3", "other")]
            for items in (list(store.read_all(on_undecodable="yield")),
                          list(store.read_all(event_types=["E", "F"], on_undecodable="yield"))):
                assert [type(i).__name__ for i in items] == [
                    "Event", "UndecodableEvent", "Event", "Event"]
                assert [i.tags for i in items] == want
            seen: list[UndecodableEvent] = []
            kept = list(store.read_all(on_undecodable=seen.append))
            assert [e.tags for e in kept] == [want[0], want[2], want[3]]
            assert [(u.event_id, u.tags) for u in seen] == [(victim.event_id, ("n:1",))]
        finally:
            store.close()

    @pytest.mark.parametrize("frame", ["garbage", "bomb", "truncated"])
    def test_a_corrupt_frame_is_a_decoding_error_never_a_hang(
        self, tmp_path: Path, frame: str
    ) -> None:
        import zstandard

        store = self.create_store(tmp_path, None)
        try:
            self._fill(store)
            victim = store.read_stream("order-2")[1]
            good = zstandard.ZstdCompressor(write_checksum=True).compress(b'{"a": 1}' * 500)
            stored = {
                "garbage": b"\x28\xb5\x2f\xfd" + b"\x00garbage" * 10,
                # Declares (and holds) 64 MiB of zeros: over the 8 MiB bound.
                "bomb": zstandard.ZstdCompressor().compress(bytes(64 * 1024 * 1024)),
                "truncated": good[:-6],
            }[frame]
            self.corrupt_payload(store, victim, stored)
            with pytest.raises(DecodingError) as caught:
                store.read_stream("order-2")
            assert caught.value.position == victim.position
            # A reader that asked to pass undecodable events gets it in its place.
            items = list(store.read_all(on_undecodable="yield"))
            bad = [i for i in items if isinstance(i, UndecodableEvent)]
            assert [b.event_id for b in bad] == [victim.event_id]
            assert len(items) == 4
        finally:
            store.close()
