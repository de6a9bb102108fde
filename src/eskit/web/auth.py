"""Bearer tokens with two scopes: reading and writing (see :class:`WebSettings`).

A write token can also read. Each check compares the offered token with every
configured one through :func:`hmac.compare_digest`, without stopping at the first
match, so the time taken says nothing about how much of a token was right.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eskit.web.settings import WebSettings

__all__ = ["AccessDenied", "ReadAccess", "WriteAccess", "require_read", "require_write"]

# auto_error=False: a missing or malformed header is answered by AccessDenied below
# (a problem body), not by FastAPI's own 403. It also puts the scheme in the spec.
_bearer = HTTPBearer(auto_error=False, description="a read or write token")


class AccessDenied(Exception):
    """The request lacks the token its operation needs (401) or its scope (403)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def settings_of(request: Request) -> WebSettings:
    settings: WebSettings = request.app.state.eskit_web_settings
    return settings


def _matches(offered: str, tokens: tuple[str, ...]) -> bool:
    wanted = offered.encode("utf-8", "surrogateescape")
    found = False
    for token in tokens:
        found |= hmac.compare_digest(wanted, token.encode())
    return found


def _offered(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return None if credentials is None else credentials.credentials


def require_read(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Pass if the request carries a read or a write token, or carries none and reads
    are open. A token that matches nothing is refused even then: a client with a
    mistyped token learns it at once rather than when reads close."""
    settings = settings_of(request)
    offered = _offered(credentials)
    if offered is None:
        if settings.reads_need_token:
            raise AccessDenied(401, "unauthorized", "reading needs a bearer token")
        return
    if not _matches(offered, settings.read_tokens + settings.write_tokens):
        raise AccessDenied(401, "unauthorized", "the bearer token is not valid")


def require_write(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Pass only with a write token, on an app that is not read-only."""
    settings = settings_of(request)
    if not settings.writable:
        raise AccessDenied(403, "read-only", "this server is read-only: it has no write token "
                           "configured" if not settings.write_tokens else
                           "this server is read-only")
    offered = _offered(credentials)
    if offered is None:
        raise AccessDenied(401, "unauthorized", "writing needs a bearer token")
    if _matches(offered, settings.write_tokens):
        return
    if _matches(offered, settings.read_tokens):
        raise AccessDenied(403, "insufficient-scope", "this token may read but not write")
    raise AccessDenied(401, "unauthorized", "the bearer token is not valid")


ReadAccess = Depends(require_read)
WriteAccess = Depends(require_write)
