"""Running the app with uvicorn so that a shutdown also ends the event streams.

uvicorn waits for open responses before it stops, and an event stream never
ends by itself: :class:`Server` ends them (:func:`stop_event_streams`) as soon
as it is told to exit, by a signal or by :meth:`Server.stop`.
"""

from __future__ import annotations

from types import FrameType

import uvicorn
from fastapi import FastAPI

from eskit.web.app import stop_event_streams

__all__ = ["GRACEFUL_SHUTDOWN_SECONDS", "Server"]

GRACEFUL_SHUTDOWN_SECONDS = 5
"""How long a shutdown waits for requests still running before it cancels them."""


class Server(uvicorn.Server):
    """A uvicorn server for an app from :func:`eskit.web.create_app`."""

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000,
                 log_level: str = "info") -> None:
        self.web_app = app
        super().__init__(uvicorn.Config(
            app, host=host, port=port, log_level=log_level, lifespan="auto",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        stop_event_streams(self.web_app)
        super().handle_exit(sig, frame)

    def stop(self) -> None:
        """Shut down, from any thread: end the event streams, then stop serving."""
        stop_event_streams(self.web_app)
        self.should_exit = True
