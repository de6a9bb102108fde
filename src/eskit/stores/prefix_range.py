"""Stream-prefix (category) matching as a range, for index range scans in SQL.

Why a range and not ``LIKE 'p%'``: prefixes are arbitrary text (``%``, ``_`` and any
Unicode), and a half-open range ``p <= stream_id < upper`` uses a plain b-tree index
on both SQLite (BINARY collation: UTF-8 bytes, which sort in code-point order) and
PostgreSQL under ``COLLATE "C"``. Python compares ``str`` in code-point order too, so
the memory store can apply the same test. Pure: no I/O.
"""

from __future__ import annotations

__all__ = ["prefix_upper_bound"]

_MAX = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix``.

    ``None`` means there is no such bound (the prefix is empty or consists only of
    U+10FFFF): then ``stream_id >= prefix`` alone selects the category. Trailing
    U+10FFFF characters cannot be incremented and are dropped; the step after
    U+D7FF is U+E000, because lone surrogates are never valid stream ids.
    """
    chars = prefix.rstrip(chr(_MAX))
    if not chars:
        return None
    last = ord(chars[-1]) + 1
    if last in _SURROGATES:
        last = _SURROGATES.stop
    return chars[:-1] + chr(last)
