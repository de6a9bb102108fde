"""Listing streams a page at a time, by stream id: argument checks and the in-Python page.

:meth:`EventStore.list_streams_page <eskit.EventStore.list_streams_page>` pages by a
cursor (the last stream id of the previous page), never by an offset, so a page
costs the same wherever it is and does not shift when streams are added before it.
The order is code-point order of the stored stream id text: what SQLite's BINARY
collation and PostgreSQL's ``COLLATE "C"`` give, and how Python compares ``str``.
Pure: no I/O. The SQL stores run the same selection as a range
(:func:`~eskit.stores.prefix_range.prefix_upper_bound`) in SQL; stores without SQL
cut the page from :meth:`~eskit.EventStore.list_streams` with :func:`page_of_streams`.
"""

from __future__ import annotations

from collections.abc import Iterable

from eskit.errors import InvalidInputError
from eskit.events import check_name
from eskit.stores.arguments import stream_key
from eskit.stores.model import MAX_VERSION, StreamInfo

__all__ = ["check_listing_args", "page_of_streams"]


def check_listing_args(prefix: object, after: object, limit: object) -> tuple[str, str | None, int]:
    """``(prefix, after, limit)`` checked before any I/O, ``after`` as stored text.

    ``prefix`` is ``""`` (every stream) or follows the stream-id rules; ``after`` is
    ``None`` or a stream id (a UUID as its text); ``limit`` an int >= 0, capped at
    2**63 - 1 (more than any store holds) so that no database sees an overflow.
    """
    if type(prefix) is not str:
        raise InvalidInputError(f"prefix must be a str, got {type(prefix).__name__}")
    if prefix:
        check_name("stream prefix", prefix)
    cursor = None if after is None else stream_key(after)
    if type(limit) is not int or limit < 0:
        raise InvalidInputError(f"limit must be an int >= 0, got {limit!r}")
    return prefix, cursor, min(limit, MAX_VERSION)


def page_of_streams(
    streams: Iterable[StreamInfo], prefix: str, after: str | None, limit: int
) -> list[StreamInfo]:
    """The page :meth:`~eskit.EventStore.list_streams_page` returns, cut in Python."""
    keyed = sorted(
        ((stream_key(info.stream_id), info) for info in streams), key=lambda pair: pair[0]
    )
    return [
        info for key, info in keyed
        if key.startswith(prefix) and (after is None or key > after)
    ][:limit]
