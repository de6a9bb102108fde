"""Signing in to the explorer when reads need a token.

A browser sends no bearer token, so an app whose settings carry ``read_tokens``
asks for one on a sign-in page instead. A token that matches (a read or a write
token) earns a cookie holding ``HMAC-SHA256(secret, token)`` with a secret drawn
once per app: the cookie names no token, a forged one matches nothing, and every
cookie ends when the server restarts or the token is removed from the settings.
The cookie is ``HttpOnly`` and ``SameSite=Strict`` (another site's page cannot make
the browser send it), ``Secure`` when the request came over https.

Not guaranteed: secrecy of the token on the wire without TLS in front of the server,
or signing out everywhere at once short of a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eskit.web.explorer._forms import read_form

__all__ = ["COOKIE", "SignIn", "read_tokens"]

COOKIE = "eskit_explorer"


def read_tokens(settings: object) -> tuple[str, ...]:
    """The tokens that let a browser read: the read tokens, and the write tokens beside
    them (a write token can also read); none when reads are open to anyone."""
    reads = tuple(getattr(settings, "read_tokens", None) or ())
    if not reads:
        return ()
    return reads + tuple(getattr(settings, "write_tokens", None) or ())


def safe_next(value: str | None, default: str) -> str:
    """``value`` when it is a path on this server, else ``default``: a sign-in link
    must not send the browser to another site (``//evil.example`` is one)."""
    if (not value or not value.startswith("/") or value.startswith("//")
            or "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)):
        return default
    return value


class SignIn:
    """The cookie check, and the sign-in and sign-out endpoints, of one explorer."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._secret = secrets.token_bytes(32)
        self._valid = tuple(self._seal(t) for t in tokens)

    @property
    def required(self) -> bool:
        return bool(self._valid)

    def _seal(self, token: str) -> str:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).hexdigest()

    def _known(self, value: str) -> bool:
        # Every value compared, each in constant time: no early exit says which matched.
        found = False
        for valid in self._valid:
            found |= hmac.compare_digest(value.encode("utf-8", "surrogateescape"),
                                         valid.encode())
        return found

    def allows(self, request: Request) -> bool:
        """Whether ``request`` may read: sign-in is off, or it carries a valid cookie."""
        if not self._valid:
            return True
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and self._known(cookie)

    def refuse(self, request: Request, root: str) -> Response:
        """Where a request without a valid cookie goes: a page to the sign-in form
        (coming back afterwards); anything else (the live tail, a POST) a plain 401."""
        # request.url.path is the whole path, the mount point included.
        if request.method == "GET" and not request.url.path.endswith("/log/live"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{root}/signin?{urlencode({'next': target})}",
                                    status_code=303)
        return Response("sign in first", status_code=401, media_type="text/plain")

    async def submit(self, request: Request, root: str,
                     render: Callable[[str, int, str | None], Response]) -> Response:
        """POST /signin: a matching token sets the cookie and goes on to ``next``;
        anything else renders the form again (``render(message, status, next)``)
        and sets nothing."""
        form = await read_form(request)
        if form is None:
            return render("the form is too large", 413, None)
        given = form.get("token", "")
        if not given or not self._valid or not self._known(self._seal(given)):
            return render("that token is not valid here", 401, form.get("next"))
        response = RedirectResponse(safe_next(form.get("next"), f"{root}/streams"),
                                    status_code=303)
        response.set_cookie(COOKIE, self._seal(given), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path=root or "/")
        return response

    def sign_out(self, root: str) -> Response:
        response = RedirectResponse(f"{root}/signin", status_code=303)
        response.delete_cookie(COOKIE, path=root or "/", httponly=True, samesite="strict")
        return response
