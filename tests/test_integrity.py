"""The pure part of tamper evidence: canonical event bytes, links, and the chain checker."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from eskit.integrity import (
    GENESIS,
    HASH_BYTES,
    content_digest,
    event_bytes,
    head_digest,
    link_hash,
    version_bytes,
)
from eskit.stores.chain_check import ChainChecker, ChainRow, StreamStart, merged_starts


def _bytes(stream: str = "s", version: int = 1, data: bytes = b'{"n":1}') -> bytes:
    return event_bytes(stream, version, b"\x01" * 16, "Numbered", 1, 1_700_000_000_000_000,
                       data, b"{}")


def test_link_hash_is_sha256_of_the_previous_hash_and_the_event_bytes() -> None:
    event = _bytes()
    assert link_hash(None, event) == hashlib.sha256(GENESIS + event).digest()
    assert link_hash(GENESIS, event) == link_hash(None, event)
    prev = b"\x07" * HASH_BYTES
    assert link_hash(prev, event) == hashlib.sha256(prev + event).digest()
    assert len(link_hash(prev, event)) == HASH_BYTES


def test_the_format_is_pinned() -> None:
    # Stored hashes depend on these bytes: a change here breaks every existing chain.
    event = event_bytes("order-1", 2, bytes(range(16)), "Placed", 1, 1_700_000_000_000_000,
                        b'{"n":1}', b"{}")
    assert event == version_bytes(2) + content_digest(
        "order-1", bytes(range(16)), "Placed", 1, 1_700_000_000_000_000, b'{"n":1}', b"{}")
    assert version_bytes(2) == b"\x00" * 7 + b"\x02"
    link = link_hash(None, event)
    assert link.hex() == "50db099b6d9fb1ffc06083d632f76e8b40674d43c3cb569ab28b89cb088505a1"
    assert head_digest([("order-1", 2, link)]) == (
        "70324a071a76822b6bcb9902e4098d640706a214f9f22d650d42e51fbcd261e5")


def test_every_field_changes_the_bytes_and_fields_cannot_run_into_each_other() -> None:
    base = ("s", 1, b"\x01" * 16, "T", 1, 5, b'{"a":1}', b"{}")
    seen = {event_bytes(*base)}
    for i, other in enumerate(("t", 2, b"\x02" * 16, "U", 2, 6, b'{"a":2}', b'{"m":1}')):
        changed = list(base)
        changed[i] = other
        seen.add(event_bytes(*changed))  # type: ignore[arg-type]
    assert len(seen) == 9
    # Length prefixes: moving bytes from the type into the stream gives other bytes.
    assert event_bytes("ab", 1, b"", "c", 1, 0, b"", b"") != \
        event_bytes("a", 1, b"", "bc", 1, 0, b"", b"")


def test_event_bytes_accept_any_stored_text() -> None:
    # A lone surrogate can reach a stream key through the str API; it must hash, not fail.
    assert event_bytes("s\ud800", 1, b"", "T", 1, 0, b"", b"") != \
        event_bytes("s", 1, b"", "T", 1, 0, b"", b"")


def test_head_digest_is_order_and_content_sensitive() -> None:
    a, b = ("a", 1, b"\x01" * 32), ("b", 2, b"\x02" * 32)
    assert head_digest([a, b]) != head_digest([b, a])
    assert head_digest([a, b]) != head_digest([a, ("b", 2, b"\x03" * 32)])
    assert head_digest([("a", 1, None)]) != head_digest([])
    assert len(head_digest([])) == 64


def _chain(stream: str, count: int, *, start: int = 1, previous: bytes | None = None,
           first_position: int = 1) -> list[ChainRow]:
    rows = []
    for i in range(count):
        version = start + i
        data = f'{{"n":{version}}}'.encode()
        eid = version.to_bytes(16, "big")
        previous = link_hash(previous, event_bytes(stream, version, eid, "T", 1, 10, data,
                                                   b"{}"))
        rows.append(ChainRow(stream, version, first_position + i, eid, "T", 1, 10, data,
                             b"{}", previous))
    return rows


def _check(rows: list[ChainRow], **kwargs: object) -> list[tuple[str, str, int]]:
    starts = kwargs.pop("starts", None)
    checker = ChainChecker(**kwargs) if starts is None else ChainChecker(  # type: ignore[arg-type]
        merged_starts(starts), **kwargs)  # type: ignore[arg-type]
    for row in rows:
        checker.feed(row)
    report = checker.finish()
    return [(p.kind, p.stream, p.version) for p in report.problems]


def test_a_clean_chain_has_no_problems_and_counts_events_and_streams() -> None:
    rows = _chain("a", 3) + _chain("b", 2, first_position=10)
    checker = ChainChecker()
    for row in rows:
        checker.feed(row)
    report = checker.finish()
    assert report.ok
    assert (report.events, report.streams) == (5, 2)
    assert report.head == head_digest([("a", 3, rows[2].hash), ("b", 2, rows[4].hash)])


def test_an_altered_payload_is_reported_at_its_version_only() -> None:
    rows = _chain("a", 4)
    rows[1] = replace(rows[1], data=b'{"n":99}')
    assert _check(rows) == [("altered", "a", 2)]


def test_an_altered_newest_event_is_reported() -> None:
    rows = _chain("a", 3)
    rows[2] = replace(rows[2], event_type="Other")
    assert _check(rows) == [("altered", "a", 3)]


def test_a_removed_event_is_a_gap() -> None:
    rows = _chain("a", 4)
    assert _check(rows[:1] + rows[2:]) == [("removed", "a", 3)]
    assert _check(rows[1:]) == [("removed", "a", 2)]


def test_a_removal_with_renumbering_is_reported_once() -> None:
    rows = _chain("a", 5)
    kept = [rows[0]] + [replace(r, version=r.version - 1) for r in rows[2:]]
    assert _check(kept) == [("removed", "a", 2)]


def test_an_insertion_with_renumbering_is_reported_once() -> None:
    rows = _chain("a", 4)
    intruder = replace(rows[1], event_id=b"\x09" * 16, hash=b"\x05" * 32)
    shifted = [rows[0], intruder] + [replace(r, version=r.version + 1) for r in rows[1:]]
    assert _check(shifted) == [("inserted", "a", 2)]


def test_an_event_without_a_hash_after_chained_ones_was_inserted() -> None:
    rows = _chain("a", 2)
    extra = replace(rows[1], version=3, position=3, event_id=b"\x03" * 16, hash=None)
    assert _check([*rows, extra]) == [("inserted", "a", 3)]


def test_swapped_versions_are_reordered() -> None:
    rows = _chain("a", 4)
    swapped = [rows[0], replace(rows[2], version=2), replace(rows[1], version=3), rows[3]]
    assert _check(swapped) == [("reordered", "a", 2)]


def test_positions_out_of_version_order_are_reordered() -> None:
    rows = _chain("a", 3)
    rows[1], rows[2] = replace(rows[1], position=3), replace(rows[2], position=2)
    assert _check(rows) == [("reordered", "a", 3)]


def test_unchained_rows_are_counted_not_reported_until_the_chain_began() -> None:
    old = [replace(r, hash=None) for r in _chain("a", 2)]
    new = _chain("a", 2, start=3, previous=None, first_position=3)
    checker = ChainChecker(chained_after=2)
    for row in [*old, *new]:
        checker.feed(row)
    report = checker.finish()
    assert report.ok
    assert report.unchained == 2
    stripped = [*old, replace(new[0], hash=None), new[1]]
    assert _check(stripped, chained_after=2)[0] == ("altered", "a", 3)


def test_a_truncated_stream_links_to_its_anchor() -> None:
    rows = _chain("a", 5)
    starts = [("a", StreamStart(3, rows[1].hash))]
    assert _check(rows[2:], starts=starts) == []
    assert _check(rows[3:], starts=starts) == [("removed", "a", 4)]
    wrong = [("a", StreamStart(3, b"\x00" * 31 + b"\x01"))]
    assert _check(rows[2:], starts=wrong) == [("altered", "a", 3)]


def test_merged_starts_walks_streams_in_order() -> None:
    start_of = merged_starts([("b", StreamStart(2, None)), ("d", StreamStart(5, None))])
    assert [start_of(s) for s in ("a", "b", "c", "d", "e")] == [
        None, StreamStart(2, None), None, StreamStart(5, None), None]


def test_a_checkpoint_covers_the_heads_at_a_position() -> None:
    a, b = _chain("a", 3), _chain("b", 1, first_position=2)
    rows = sorted([*a, *b], key=lambda r: (r.stream, r.version))
    checker = ChainChecker(as_of=2)
    for row in rows:
        checker.feed(row)
    report = checker.finish()
    assert report.checkpoint == "2:" + head_digest([("a", 2, a[1].hash), ("b", 1, b[0].hash)])


@pytest.mark.parametrize("version", [1, 2])
def test_a_problem_names_stream_and_version(version: int) -> None:
    rows = _chain("orders-1", 2)
    rows[version - 1] = replace(rows[version - 1], metadata=b'{"x":1}')
    checker = ChainChecker()
    for row in rows:
        checker.feed(row)
    problem = checker.finish().problems[0]
    assert str(problem).startswith(f"altered: stream 'orders-1' version {version}:")


def test_the_appends_inlined_hashes_equal_the_definitions() -> None:
    from datetime import UTC, datetime, timedelta

    from eskit import EventRegistry, NewEvent
    from eskit.stores.arguments import prepare_batch
    from eskit.stores.chain_links import chain_hashes, digests
    from eskit.stores.rows import timestamp_to_micros

    early = datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    batch = prepare_batch("s-ü", [
        NewEvent("Placed", {"n": 1}, {"by": "é"}), NewEvent("Paid", {}, timestamp=early),
        NewEvent("Üpdated", {"x": [1, 2]}, timestamp=early + timedelta(days=99_999)),
    ], registry=EventRegistry(), max_event_bytes=1 << 20)
    expected = [content_digest("s-ü", p.event_id.bytes, p.event_type, p.schema_version,
                               timestamp_to_micros(p.timestamp), p.data, p.metadata)
                for p in batch]
    assert digests("s-ü", batch) == expected
    previous = b"\x42" * 32
    links = []
    for version, digest in enumerate(expected, 8):
        previous = link_hash(previous, version_bytes(version) + digest)
        links.append(previous)
    assert chain_hashes(7, b"\x42" * 32, expected) == links
    assert chain_hashes(0, None, expected[:1]) == [link_hash(None, version_bytes(1) + expected[0])]


def test_the_sqlite_link_function_is_link_hash() -> None:
    from eskit.stores.sqlite_chain import link_function

    digest = b"\x11" * 32
    assert link_function(None, 1, digest) == link_hash(None, version_bytes(1) + digest)
    assert link_function(b"\x22" * 32, 2**40, digest) == link_hash(
        b"\x22" * 32, version_bytes(2**40) + digest)
