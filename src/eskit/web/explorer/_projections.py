"""The projections page, and retrying or skipping a parked event (the explorer's only writes).

A write needs three things, checked in this order before anything is touched: a
write token configured (otherwise the explorer is read-only: 403), the same token
in the form or an ``Authorization: Bearer`` header (compared in constant time:
403), and the confirmation field a second page sets (400 without it). The token in
the form body also stops cross-site form posts: another site cannot know it.
"""

from __future__ import annotations

import hmac

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eskit.errors import EskitError, InvalidInputError
from eskit.health import DEFAULT_MAX_LAG, check_health
from eskit.projections.checkpoints import DeadLetter
from eskit.projections.parked import ParkedEventBlocked, retry_parked, skip_parked
from eskit.web.explorer._context import Explorer, link_maker, root_of, text_param
from eskit.web.explorer._forms import read_form

__all__ = ["ProjectionPages"]

ACTIONS = ("retry", "skip")


class ProjectionPages:
    def __init__(self, explorer: Explorer) -> None:
        self.x = explorer

    def overview(self, request: Request) -> Response:
        target = self.x.target
        if target is None:
            return self.x.render(request, "projections.html", {
                "states": [], "letters": [], "lags": {}, "registered": self.x.projections,
                "no_target": True, "done": None,
            })
        # The lag as the health check counts it (bounded, so the page stays cheap).
        report = check_health(self.x.store, projections=target)
        lags = {c.name.removeprefix("projection "): c for c in report.checks}
        return self.x.render(request, "projections.html", {
            "states": target.states(), "letters": target.dead_letters(status=None),
            "lags": lags, "registered": self.x.projections, "no_target": False,
            "max_lag": DEFAULT_MAX_LAG, "done": text_param(request, "done") or None,
            # A running blue/green rebuild checkpoints as "<name>#rebuild" (see
            # eskit.projections.rebuild): its row shows how far it has come.
            "head": self.x.store.head_position(),
        })

    def confirm(self, request: Request) -> Response:
        """The confirmation page for one action on one parked event (GET: changes nothing)."""
        action = text_param(request, "action")
        projection = text_param(request, "projection")
        event_id = text_param(request, "event_id")
        if action not in ACTIONS:
            return self.x.error(request, 400, f"action must be retry or skip, not {action!r}")
        letter = self._letter(projection, event_id)
        if letter is None:
            return self.x.error(request, 404, f"no parked event {event_id!r} for {projection!r}")
        return self.x.render(request, "confirm.html", {
            "action": action, "letter": letter,
            "retryable": projection in self.x.projections,
        })

    async def act(self, request: Request) -> Response:
        """POST: retry or skip one parked event, once the token and confirmation check out."""
        if not self.x.signin.allows(request):
            return self.x.signin.refuse(request, root_of(request))
        if not self.x.tokens:
            return self.x.error(request, 403, "the explorer is read-only: no write token is set")
        form = await read_form(request)
        if form is None:
            return self.x.error(request, 413, "the form is too large")
        given = form.get("token") or _bearer(request)
        # Every token compared, in constant time each: no early exit tells which matched.
        matches = [hmac.compare_digest(given.encode(), t.encode()) for t in self.x.tokens] \
            if given else []
        if not any(matches):
            return self.x.error(request, 403, "the write token is missing or wrong")
        if form.get("confirm") != "yes":
            return self.x.error(request, 400, "not confirmed: tick the confirmation box")
        action, name, event_id = form.get("action"), form.get("projection", ""), \
            form.get("event_id", "")
        if action not in ACTIONS:
            return self.x.error(request, 400, f"action must be retry or skip, not {action!r}")
        try:
            await run_in_threadpool(self._apply, action, name, event_id)
        except ParkedEventBlocked as exc:
            return self.x.error(request, 409, str(exc))
        except InvalidInputError as exc:
            return self.x.error(request, 404, str(exc))
        except EskitError as exc:
            return self.x.error(request, 500, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a handler failing again: the event stays parked
            return self.x.error(request, 409, f"the handler failed again, the event stays "
                                              f"parked: {type(exc).__name__}: {exc}")
        done = f"{'retried' if action == 'retry' else 'skipped'} {event_id} of {name}"
        return RedirectResponse(link_maker(request)("/projections", done=done), status_code=303)

    def _apply(self, action: str, name: str, event_id: str) -> None:
        target = self.x.target
        if target is None:
            raise InvalidInputError("no projection target is configured")
        if action == "skip":
            skip_parked(target, name, event_id)
            return
        projection = self.x.projections.get(name)
        if projection is None:
            raise InvalidInputError(
                f"projection {name!r} is not registered with the explorer: it cannot be retried "
                "here (skip works without it)"
            )
        retry_parked(self.x.store, projection, target, event_id)

    def _letter(self, projection: str, event_id: str) -> DeadLetter | None:
        if self.x.target is None:
            return None
        for letter in self.x.target.dead_letters(projection, status=None):
            if letter.event_id == event_id and letter.status == "parked":
                return letter
        return None


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
