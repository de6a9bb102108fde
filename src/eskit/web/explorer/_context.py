"""What every explorer page shares: settings, templates, links, parameters, error pages."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from eskit.aggregate import Aggregate
from eskit.errors import AggregateNotFound, EskitError, InvalidInputError, VersionNotFound
from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.projection import Projection
from eskit.stores.base import EventStore
from eskit.web.explorer._queries import pretty
from eskit.web.explorer._signin import SignIn, read_tokens

__all__ = ["BadRequest", "Explorer", "ExplorerSettings", "write_tokens"]

_HERE = Path(__file__).resolve().parent
MAX_PAGE = 500


class ExplorerSettings(Protocol):
    """What the explorer needs from the web app's settings.

    ``write_token`` ``None`` makes the explorer read-only, whatever else the settings
    hold (so settings that switch writing off through it stay read-only here too).
    A settings object may carry more tokens as ``write_tokens`` (a collection of
    str); with a ``write_token`` set, or none at all, any of them is accepted.
    Settings with ``read_tokens`` (a collection of str, optional) make every page
    ask for a sign-in first (see :mod:`eskit.web.explorer._signin`).
    """

    @property
    def write_token(self) -> str | None:
        """The token that allows retrying and skipping parked events; ``None``: read-only."""


def write_tokens(settings: object) -> tuple[str, ...]:
    """Every write token ``settings`` configures; none (read-only) if ``write_token`` is
    ``None``, even beside ``write_tokens``: that is how eskit.web's read-only mode says so."""
    if hasattr(settings, "write_token") and settings.write_token is None:
        return ()
    found: list[object] = [getattr(settings, "write_token", None)]
    found += list(getattr(settings, "write_tokens", None) or ())
    tokens = tuple(t for t in found if t is not None)
    for token in tokens:
        if type(token) is not str or not token:
            raise InvalidInputError("write tokens must be non-empty strings")
    return tokens  # type: ignore[return-value]


class BadRequest(Exception):
    """A query parameter is malformed: the page answers 400 naming it."""


@dataclass
class Explorer:
    """The store, the settings and the registrations the pages read; one per app."""

    store: EventStore
    settings: ExplorerSettings
    aggregates: Mapping[str, type[Aggregate]] = field(default_factory=dict)
    projections: Mapping[str, Projection] = field(default_factory=dict)
    target: ProjectionTarget | None = None
    templates: Jinja2Templates = field(init=False)
    tokens: tuple[str, ...] = field(init=False)
    signin: SignIn = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = write_tokens(self.settings)
        self.signin = SignIn(read_tokens(self.settings))
        # autoescape everywhere: stream ids, types and payloads are user data (hostile).
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.filters["pretty"] = pretty
        self.templates = Jinja2Templates(env=env)

    def render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        return self.templates.TemplateResponse(
            request, name,
            {"url": link_maker(request), "read_only": not self.tokens,
             "signed_in": self.signin.required and self.signin.allows(request),
             **context},
            status_code=status_code,
        )

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "error.html", {"status": status, "message": message},
                           status_code=status)

    def guarded(self, page: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """``page`` with bad input and missing things answered as error pages, not 500s."""

        def endpoint(request: Request) -> Response:
            if not self.signin.allows(request):
                return self.signin.refuse(request, root_of(request))
            try:
                return page(request)
            except BadRequest as exc:
                return self.error(request, 400, str(exc))
            except (AggregateNotFound, VersionNotFound) as exc:
                return self.error(request, 404, str(exc))
            except InvalidInputError as exc:
                return self.error(request, 400, str(exc))
            except EskitError as exc:
                return self.error(request, 500, f"{type(exc).__name__}: {exc}")

        return endpoint


def root_of(request: Request) -> str:
    """The path the explorer is mounted at, without a trailing slash ("" at the root)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def link_maker(request: Request) -> Callable[..., str]:
    """``url(path, **params)``: a link under the app's mount point, parameters encoded.

    Stream ids go in the query string, never the path: any text (slashes, ``%``,
    ``?``, quotes) survives the round trip that way.
    """
    root = root_of(request)

    def url(path: str, **params: object) -> str:
        query = urlencode({k: str(v) for k, v in params.items() if v is not None})
        return f"{root}{path}?{query}" if query else f"{root}{path}"

    return url


def text_param(request: Request, name: str, default: str = "") -> str:
    value = request.query_params.get(name, default)
    if len(value) > 10_000:
        raise BadRequest(f"{name} is too long")
    return value


def int_param(
    request: Request, name: str, default: int | None, *, minimum: int = 0,
    maximum: int = 2**128 - 1,
) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if raw == "":
        return default
    if not raw.isdigit() or len(raw) > 40:
        raise BadRequest(f"{name} must be a whole number, not {raw[:40]!r}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise BadRequest(f"{name} must be between {minimum} and {maximum}")
    return value


def limit_param(request: Request, default: int) -> int:
    value = int_param(request, "limit", default, minimum=1, maximum=MAX_PAGE)
    assert value is not None
    return value


def class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def aggregates_by_name(aggregates: Sequence[type[Aggregate]]) -> dict[str, type[Aggregate]]:
    for cls in aggregates:
        if not (isinstance(cls, type) and issubclass(cls, Aggregate)):
            raise InvalidInputError(f"aggregates must be Aggregate subclasses, not {cls!r}")
    return {class_name(cls): cls for cls in aggregates}


def projections_by_name(projections: Sequence[Projection]) -> dict[str, Projection]:
    for projection in projections:
        if not isinstance(projection, Projection):
            raise InvalidInputError(f"projections must be Projection objects, not {projection!r}")
    return {projection.name: projection for projection in projections}
