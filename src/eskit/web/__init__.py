"""eskit on the web: an HTTP API over an event store, and the HTML explorer
(:mod:`eskit.web.explorer`).

::

    from eskit import SQLiteEventStore
    from eskit.web import WebSettings, create_app

    app = create_app(SQLiteEventStore("events.db"),
                     settings=WebSettings(write_tokens=("s3cret",)))

``eskit serve STORE`` runs it with uvicorn. Needs the ``web`` extra
(``pip install 'eskit[web]'``). See docs/http-api.md.
"""

from __future__ import annotations

from eskit.errors import MissingExtraError

try:
    import fastapi  # noqa: F401
except ImportError as exc:
    raise MissingExtraError("web", "eskit.web", name=exc.name) from exc

from eskit.web.app import create_app, stop_event_streams
from eskit.web.settings import DEFAULT_MAX_REQUEST_BYTES, WebSettings

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "WebSettings", "create_app", "stop_event_streams"]
