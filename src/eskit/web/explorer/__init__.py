"""The eskit web explorer: server-rendered HTML pages to look inside an event store.

::

    from starlette.applications import Starlette
    from eskit.web.explorer import explorer_routes

    app = Starlette(routes=explorer_routes(store, settings, aggregates=[BankAccount]))

``settings`` is any object with a ``write_token`` attribute (``None`` keeps the
explorer read-only). Templates and static files ship inside this package, nothing
is fetched from a CDN. Needs the ``web`` extra (``pip install 'eskit[web]'``). See
docs/explorer.md.
"""

from __future__ import annotations

from eskit.errors import MissingExtraError

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:
    raise MissingExtraError("web", "eskit.web.explorer", name=exc.name) from exc

from eskit.web.explorer._context import ExplorerSettings
from eskit.web.explorer._routes import explorer_routes

__all__ = ["ExplorerSettings", "explorer_routes"]
