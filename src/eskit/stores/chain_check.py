"""Checking stored hash chains, with no I/O: the part of ``verify_store`` every backend shares.

A backend streams its rows in ``(stream, version)`` order (:class:`ChainRow`), with
each truncated stream's record (:class:`StreamStart`); :class:`ChainChecker` sees
one row at a time and keeps only the previous row of the current stream, so
memory does not grow with the store. What each problem means is in
:class:`Problem`; what is *not* a problem is written down in docs/data-protection.md,
"Tamper evidence".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from eskit.integrity import GENESIS, event_bytes, head_digest, link_hash

__all__ = [
    "ChainChecker", "ChainRow", "Problem", "ProblemKind", "StreamStart", "VerifyReport",
    "merged_starts",
]

ProblemKind = Literal["altered", "removed", "inserted", "reordered"]

MAX_PROBLEMS = 1000
"""Problems kept in a report; the rest are only counted (bounded memory)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One sign of tampering, at ``version`` of ``stream``.

    * ``altered``: the stored hash does not match the event and the hash before it
      (its payload, metadata, type, id, time or version was changed, or its hash).
    * ``removed``: versions are missing before this one (not explained by a recorded
      truncation), or the first stored version is not where the stream starts.
    * ``inserted``: an event that carries no chain hash after events that do (it was
      not written by eskit's append), or an event whose next one links past it.
    * ``reordered``: its global position is not after the previous version's.
    """

    kind: ProblemKind
    stream: str
    version: int
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: stream {self.stream!r} version {self.version}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ChainRow:
    """A stored event as the checker needs it (payload and metadata decoded to JSON bytes)."""

    stream: str
    version: int
    position: int
    event_id: bytes
    event_type: str
    schema_version: int
    recorded_micros: int
    data: bytes
    metadata: bytes
    hash: bytes | None


@dataclass(frozen=True, slots=True)
class StreamStart:
    """Where a truncated stream's events start, and the hash of the event before."""

    first_version: int
    anchor: bytes | None


@dataclass
class VerifyReport:
    """What :func:`eskit.stores.verify.verify_store` found.

    ``ok`` is true when no problem was found. ``unchained`` counts events stored
    before the store had hash chains (schema upgrade): not tampering, but not
    covered either. ``head`` is :func:`eskit.integrity.head_digest` over every
    stream's newest stored event; ``checkpoint`` (when asked for) the same as of a
    global position.
    """

    events: int = 0
    streams: int = 0
    unchained: int = 0
    chained_after: int = -1
    """Every event after this position must have a hash (-1: not recorded)."""
    truncated_streams: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    head: str = ""
    checkpoint: str | None = None
    checkpoint_ok: bool | None = None

    @property
    def ok(self) -> bool:
        return self.problem_count == 0 and self.checkpoint_ok is not False


class ChainChecker:
    """Feed rows in ``(stream, version)`` order; :meth:`finish` returns the report.

    ``starts``: called once per stream, in order, with its key: its
    :class:`StreamStart`, or ``None`` if it was never truncated (see
    :func:`merged_starts`). ``as_of``: also compute a checkpoint head as of this
    global position (the newest event of each stream at or before it).
    ``chained_after``: every event after this position must have a hash (-1: none
    need to).
    """

    def __init__(self, starts: Callable[[str], StreamStart | None] = lambda _: None, *,
                 as_of: int | None = None, chained_after: int = -1) -> None:
        self.report = VerifyReport()
        self._chained_after = self.report.chained_after = chained_after
        self._starts = starts
        self._start: StreamStart | None = None
        self._as_of = as_of
        self._stream: str | None = None
        self._prev: ChainRow | None = None
        self._prev_hash: bytes | None = None  # the hash the next row should link from
        self._chained = False  # the stream had a chained row
        self._pending: ChainRow | None = None  # a mismatching row, judged by the next
        self._pending_expected: bytes | None = None
        self._after_swap: bytes | None = None
        self._judged: ProblemKind | None = None  # what _judge_pending found for this row
        self._prev_position_before = -1  # the position of the row before the previous one
        self._shift = 0  # versions the rest of the stream moved by (found by _judge_pending)
        self._as_of_row: ChainRow | None = None
        self._head = _HeadHash()
        self._check = _HeadHash() if as_of is not None else None

    def _problem(self, kind: ProblemKind, row: ChainRow, detail: str) -> None:
        self.report.problem_count += 1
        if len(self.report.problems) < MAX_PROBLEMS:
            self.report.problems.append(Problem(kind, row.stream, row.version, detail))

    def feed(self, row: ChainRow) -> None:
        report = self.report
        if row.stream != self._stream:
            self._end_stream()
            self._begin_stream(row)
        report.events += 1
        prev = self._prev
        expected_prev: bytes | None  # None: the link into this row cannot be checked
        if prev is None:
            start = self._start
            first = 1 if start is None else start.first_version
            expected_prev = GENESIS if start is None else start.anchor
            if row.version > first:
                n = row.version - first
                self._problem("removed", row, f"{n} version(s) missing: the stream starts "
                              f"at version {first}")
                expected_prev = None
            elif row.version < first:
                self._problem("inserted", row, "below the version the stream starts at "
                              f"({first})")
                expected_prev = None
        else:
            expected_prev = self._prev_hash
            if row.version != prev.version + 1:
                n = row.version - prev.version - 1
                self._problem("removed", row, f"{n} version(s) missing after version "
                              f"{prev.version}")
                expected_prev = None  # the link across a gap cannot be checked
        self._judged = None
        relinked = self._judge_pending(row)
        if relinked is not None:
            expected_prev = relinked
        if prev is not None and self._judged != "reordered":
            # Against the event before an inserted one: its position is the intruder's.
            before = self._prev_position_before if self._judged == "inserted" else prev.position
            if row.position <= before:
                self._problem("reordered", row, f"position {row.position} is not after "
                              f"the previous version's ({before})")
        after_swap = self._after_swap
        self._after_swap = None
        if row.hash is None:
            if self._chained:
                self._problem("inserted", row, "no chain hash after chained events (not "
                              "written by eskit's append)")
            elif 0 <= self._chained_after < row.position:
                self._problem("altered", row, "its chain hash was removed (every event "
                              f"after position {self._chained_after} has one)")
            else:
                report.unchained += 1
            self._prev_hash = GENESIS  # the first chained event after it links from GENESIS
        else:
            if expected_prev is not None and relinked is None:
                computed = link_hash(expected_prev, self._bytes(row, row.version - self._shift))
                if computed != row.hash:
                    self._pending, self._pending_expected = row, expected_prev
            self._chained = True
            self._prev_hash = row.hash if after_swap is None else after_swap
        self._prev_position_before = prev.position if prev is not None else -1
        self._prev = row
        if self._as_of is not None and row.position <= self._as_of:
            self._as_of_row = row

    def _swapped(self, row: ChainRow, bad: ChainRow, before: bytes | None) -> bool:
        """Whether ``bad`` and ``row``, the version after it, are two events whose
        versions were exchanged (``before``: the hash ``bad`` should link from)."""
        if bad is None or before is None or bad.hash is None or row.hash is None:
            return False
        shift = self._shift
        return (link_hash(before, self._bytes(row, bad.version - shift)) == row.hash
                and link_hash(row.hash, self._bytes(bad, row.version - shift)) == bad.hash)

    @staticmethod
    def _bytes(row: ChainRow, version: int) -> bytes:
        return event_bytes(row.stream, version, row.event_id, row.event_type,
                           row.schema_version, row.recorded_micros, row.data, row.metadata)

    def _judge_pending(self, row: ChainRow | None) -> bytes | None:
        """A row whose hash did not match, judged by the one after it.

        If the next row links from the hash *before* the bad row at the bad row's
        version, the bad row was inserted (the rest moved up a version); if it links
        from the bad row's own hash at one version more, an event before the bad row
        was removed (the rest moved down). Either way the rest of the stream is then
        checked at its shifted versions, so one tampering is reported once. Returns
        the hash the next row was found to link from, when one of those holds.
        """
        bad, before = self._pending, self._pending_expected
        if bad is None:
            return None
        self._pending = None
        if row is not None and row.hash is not None and row.version == bad.version + 1:
            shift = self._shift
            if self._swapped(row, bad, before):
                self._problem("reordered", bad, f"versions {bad.version} and {row.version} "
                              "were swapped")
                self._after_swap = bad.hash  # the next event links from the later one
                self._judged = "reordered"
                return before
            if before is not None and link_hash(
                    before, self._bytes(row, row.version - shift - 1)) == row.hash:
                self._problem("inserted", bad, "the next event links past it")
                self._judged = "inserted"
                self._shift = shift + 1
                return before
            if bad.hash is not None and link_hash(
                    bad.hash, self._bytes(row, row.version - shift + 1)) == row.hash:
                self._problem("removed", bad, "an event before it is missing and the later "
                              "versions were renumbered")
                self._shift = shift - 1
                return bad.hash
        self._problem("altered", bad, "stored hash does not match the event and the "
                      "hash before it")
        return None

    def _begin_stream(self, row: ChainRow) -> None:
        self._stream = row.stream
        self._prev = None
        self._prev_hash = None
        self._chained = False
        self._shift = 0
        self._as_of_row = None
        self.report.streams += 1
        self._start = self._starts(row.stream)
        if self._start is not None:
            self.report.truncated_streams += 1

    def _end_stream(self) -> None:
        self._judge_pending(None)
        if self._prev is not None:
            self._head.add(self._prev.stream, self._prev.version, self._prev.hash)
        if self._check is not None and self._as_of_row is not None:
            r = self._as_of_row
            self._check.add(r.stream, r.version, r.hash)

    def finish(self, *, expect_checkpoint: str | None = None) -> VerifyReport:
        """End the last stream and fill in the heads; ``expect_checkpoint``: a
        checkpoint recorded before (``POSITION:DIGEST``), compared with this one."""
        self._end_stream()
        self._stream = None
        self.report.head = self._head.hexdigest()
        if self._check is not None:
            self.report.checkpoint = f"{self._as_of}:{self._check.hexdigest()}"
            if expect_checkpoint is not None:
                self.report.checkpoint_ok = self.report.checkpoint == expect_checkpoint
        return self.report


def merged_starts(
    starts: Iterable[tuple[str, StreamStart]],
) -> Callable[[str], StreamStart | None]:
    """A ``starts`` callable for :class:`ChainChecker` from ``(stream, start)`` pairs in
    the same order as the rows (so only one is held at a time)."""
    items: Iterator[tuple[str, StreamStart]] = iter(starts)
    current: list[tuple[str, StreamStart] | None] = [next(items, None)]

    def start_of(stream: str) -> StreamStart | None:
        while current[0] is not None and current[0][0] < stream:
            current[0] = next(items, None)
        item = current[0]
        return item[1] if item is not None and item[0] == stream else None

    return start_of


def stored_json(value: object) -> bytes:
    """A stored payload or metadata as the JSON bytes the chain hashed: a zstd frame
    inflated. Whatever cannot be (a corrupt frame, a value of another type written by
    raw SQL) comes back as its own bytes, so that its hash mismatches and it is
    reported as altered instead of stopping the check."""
    from eskit.errors import DecodingError
    from eskit.stores.compression import plain

    if isinstance(value, str | bytes):
        try:
            decoded = plain(value)
        except DecodingError:
            decoded = value
        if isinstance(decoded, str):
            return decoded.encode("utf-8", "surrogatepass")
        return decoded
    return repr(value).encode()


class _HeadHash:
    """:func:`eskit.integrity.head_digest`, fed one stream at a time (bounded memory)."""

    def __init__(self) -> None:
        import hashlib

        self._digest = hashlib.sha256(b"eskit-head/1\x00")
        self._count = 0

    def add(self, stream: str, version: int, hash_: bytes | None) -> None:
        for value in (stream.encode("utf-8", "surrogatepass"), str(version).encode(),
                      hash_ or b""):
            self._digest.update(len(value).to_bytes(4, "big") + value)
        self._count += 1

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


assert _HeadHash().hexdigest() == head_digest([])
