"""The explorer's posted forms: read whole, bounded, decoded once (internal)."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request

__all__ = ["MAX_FORM_BYTES", "read_form"]

MAX_FORM_BYTES = 16 * 1024
"""The largest form body a page accepts; the explorer's forms hold a token or two."""


async def read_form(request: Request) -> dict[str, str] | None:
    """The posted url-encoded form, first value of each field; ``None`` when the body
    is over :data:`MAX_FORM_BYTES` (answer 413). Bytes that are not UTF-8 are replaced,
    so they match no token."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
