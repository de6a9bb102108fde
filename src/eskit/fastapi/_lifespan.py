"""The lifespan: open the store, start background services, stop them, close the store."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fastapi import FastAPI

from eskit.aio.config import open_store
from eskit.aio.repository import AsyncRepository
from eskit.aio.store import AsyncEventStore
from eskit.errors import InvalidInputError

__all__ = [
    "BackgroundService",
    "EskitState",
    "as_task",
    "background_service",
    "eskit_lifespan",
    "in_thread",
]

_log = logging.getLogger("eskit.fastapi")

DEFAULT_STOP_TIMEOUT = 30.0


@runtime_checkable
class BackgroundService(Protocol):
    """What the lifespan starts after the store opens and stops before it closes.

    ``start()`` returns once the service runs (raising aborts the app's startup:
    the services already started are stopped, the store is closed).
    ``stop()`` returns once it has stopped, and raises the error the service
    ended with, if it ended with one, so that no failure goes unreported.
    ``stop()`` is called once, also after a failed run.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _Thread:
    """A sync ``run()``/``stop()`` object (a :class:`~eskit.ProjectionRunner`) in a thread."""

    def __init__(self, runner: Any, stop_timeout: float) -> None:
        self.runner = runner
        self.stop_timeout = stop_timeout
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:
            # Logged now, while the app still serves: its read model stopped moving.
            _log.exception("background runner %r failed", _name(self.runner))
            self.error = exc

    async def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"eskit-{_name(self.runner)}", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        self.runner.stop()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self.stop_timeout)
            if self._thread.is_alive():
                _log.warning("background runner %r did not stop within %s s",
                             _name(self.runner), self.stop_timeout)
        if self.error is not None:
            raise self.error


class _Task:
    """An object with ``async run()`` and ``stop()`` (sync or async) as an asyncio task."""

    def __init__(self, runner: Any, stop_timeout: float) -> None:
        self.runner = runner
        self.stop_timeout = stop_timeout
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.runner.run(), name=f"eskit-{_name(self.runner)}")
        self._task.add_done_callback(self._report)

    def _report(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _log.error("background runner %r failed", _name(self.runner),
                       exc_info=task.exception())

    async def stop(self) -> None:
        stopped = self.runner.stop()
        if inspect.isawaitable(stopped):
            await stopped
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=self.stop_timeout)
        if not done:
            _log.warning("background runner %r did not stop within %s s; cancelling it",
                         _name(self.runner), self.stop_timeout)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            return
        self._task.result()  # re-raises the error the run ended with


def _name(runner: Any) -> str:
    return str(getattr(runner, "name", type(runner).__name__))


def in_thread(runner: Any, *, stop_timeout: float = DEFAULT_STOP_TIMEOUT) -> BackgroundService:
    """Run a sync ``runner`` (``run()`` until ``stop()``) in a daemon thread.

    For :class:`~eskit.ProjectionRunner` and anything shaped like it. ``stop()``
    waits up to ``stop_timeout`` seconds for ``run()`` to return (a batch in
    flight finishes and commits first), then logs a warning and moves on.
    """
    return _Thread(runner, stop_timeout)


def as_task(runner: Any, *, stop_timeout: float = DEFAULT_STOP_TIMEOUT) -> BackgroundService:
    """Run an async ``runner`` (``await run()`` until ``stop()``) as an asyncio task.

    ``stop()`` may be sync or async. After ``stop_timeout`` seconds the task is
    cancelled.
    """
    return _Task(runner, stop_timeout)


def background_service(obj: object, *, stop_timeout: float = DEFAULT_STOP_TIMEOUT,
                       ) -> BackgroundService:
    """``obj`` as a :class:`BackgroundService`: as it is, or wrapped by how it runs.

    An object with async ``start()`` and ``stop()`` is used as it is; one with
    ``run()`` and ``stop()`` runs as a task when ``run`` is a coroutine function
    (an async runner), else in a thread (:func:`in_thread`). Anything else is an
    :class:`~eskit.InvalidInputError`.
    """
    start, stop = getattr(obj, "start", None), getattr(obj, "stop", None)
    if inspect.iscoroutinefunction(start) and inspect.iscoroutinefunction(stop):
        return obj  # type: ignore[return-value]
    run = getattr(obj, "run", None)
    if callable(run) and callable(stop):
        if inspect.iscoroutinefunction(run):
            return as_task(obj, stop_timeout=stop_timeout)
        return in_thread(obj, stop_timeout=stop_timeout)
    raise InvalidInputError(
        f"{obj!r} is not a background service: it needs async start() and stop(), "
        "or run() and stop()"
    )


@dataclass
class EskitState:
    """What the lifespan keeps on ``app.state.eskit`` while the app runs."""

    store: AsyncEventStore
    repository: AsyncRepository
    background: list[BackgroundService] = field(default_factory=list)


Background = Iterable[object] | Callable[[AsyncEventStore], Iterable[object]]


def eskit_lifespan(
    url: str | os.PathLike[str] | None = None,
    *,
    store: AsyncEventStore | None = None,
    schema: str | None = None,
    background: Background = (),
    repository: Callable[[AsyncEventStore], AsyncRepository] = AsyncRepository,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan``: the store and background services live as long as the app.

    On startup: opens the store ``url`` names (``None``: ``$ESKIT_DSN``, through
    :func:`eskit.aio.open_store`), or takes ``store`` (opened by the caller, who
    also closes it); builds the repository (``repository(store)``, e.g. to add
    snapshots); starts the background services in order. ``background`` is a
    list, or a function of the store that returns one (runners need the store);
    each item is passed through :func:`background_service`. Everything is on
    ``app.state.eskit`` (an :class:`EskitState`) for the dependencies.

    On shutdown: stops the services in reverse order, every one even if one
    fails, then closes the store it opened. A service's failure is raised after
    that (an ``ExceptionGroup`` when several failed).

    Not guaranteed: a sync runner that does not return within ``stop_timeout``
    is left running in its daemon thread (logged); nothing waits for a read model
    to catch up before the app serves (use ``runner.wait_for(position)``).
    """
    if store is not None and url is not None:
        raise InvalidInputError("pass a store URL or an open store, not both")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = store is None
        the_store = store if store is not None else await open_store(url, schema=schema)
        started: list[BackgroundService] = []
        try:
            items = background(the_store) if callable(background) else background
            services = [background_service(item, stop_timeout=stop_timeout) for item in items]
            app.state.eskit = EskitState(the_store, repository(the_store), services)
            for service in services:
                await service.start()
                started.append(service)
        except BaseException:
            app.state.eskit = None
            try:
                await _shutdown(started, the_store if opened else None)
            except Exception:  # the startup failure is the one to raise
                _log.exception("cleaning up after a failed startup failed too")
            raise
        try:
            yield
        finally:
            try:
                await _shutdown(started, the_store if opened else None)
            finally:
                app.state.eskit = None

    return lifespan


async def _shutdown(started: list[BackgroundService], store: AsyncEventStore | None) -> None:
    errors: list[Exception] = []
    for service in reversed(started):
        try:
            await service.stop()
        except Exception as exc:
            errors.append(exc)
    if store is not None:
        await store.close()
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup("background services failed", errors)
