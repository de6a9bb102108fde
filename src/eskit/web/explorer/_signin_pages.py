"""The ``/signin`` and ``/signout`` endpoints (the check itself is in ``_signin``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from eskit.web.explorer._context import Explorer, root_of
from eskit.web.explorer._signin import safe_next

__all__ = ["signin_form", "signout"]


def signin_form(explorer: Explorer) -> Callable[[Request], Awaitable[Response]]:
    """GET: the form (``?next=`` where to go afterwards); POST: check the token."""

    async def endpoint(request: Request) -> Response:
        root = root_of(request)
        if not explorer.signin.required:
            return explorer.error(request, 404, "this explorer needs no sign-in: reads are open")

        def render(message: str, status: int, next_page: str | None = None) -> Response:
            return explorer.render(request, "signin.html", {
                "message": message,
                "next": safe_next(next_page, f"{root}/streams"),
            }, status_code=status)

        if request.method == "GET":
            return render("", 200, request.query_params.get("next"))
        return await explorer.signin.submit(request, root, render)

    return endpoint


def signout(explorer: Explorer) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return explorer.signin.sign_out(root_of(request))

    return endpoint
