"""What the stores, repositories and runners call when observability is on (internal).

This module imports nothing optional: the hot paths read :data:`active` once per
call, and while it is ``None`` (the default: :func:`eskit.observability.instrument`
was never called) they do nothing else. An :class:`Observer` holds the tracing
half (:mod:`eskit.observability.otel`, OpenTelemetry's API) and any number of
metric recorders (OpenTelemetry or Prometheus), so one hook feeds them all.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

from eskit.errors import ConcurrencyError

if TYPE_CHECKING:
    from eskit.stores.model import PendingEvent

__all__: list[str] = []


class Recorder(Protocol):
    """A sink for store metrics; ``system`` is the ``db.system.name`` of the store."""

    def appended(self, system: str, events: int, seconds: float) -> None: ...
    def conflicted(self, system: str, seconds: float) -> None: ...
    def failed(self, system: str, operation: str, error: str, seconds: float) -> None: ...
    def loaded(self, system: str, events: int, seconds: float) -> None: ...
    def read_page(self, system: str, events: int, seconds: float) -> None: ...


class Tracing(Protocol):
    """The tracing half of an observer (see :mod:`eskit.observability.otel`)."""

    def start_append(
        self, store: Any, system: str, stream: str, batch: Sequence[PendingEvent]
    ) -> Any: ...
    def end(self, scope: Any, error: BaseException | None) -> None: ...
    def read_page(self, system: str, after: int, limit: int) -> Any: ...
    def load(self, system: str, stream: str, aggregate_type: str) -> Any: ...
    def batch(self, projection: str, partition: int) -> Any: ...
    def link_events(self, events: Sequence[Any]) -> None: ...
    def step(self, process: str, step: str, trigger: Any) -> Any: ...
    def publish(self, destination: str, event: Any) -> Any: ...


def db_system(store: object) -> str:
    """The OpenTelemetry ``db.system.name`` of a store: ``sqlite``, ``postgresql`` or ``memory``."""
    return getattr(store, "db_system", "other_sql")


class Load:
    """What a load observed: the repository counts into it with :func:`eskit.loading.counting`."""

    __slots__ = ("events", "snapshot_version", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.events = 0
        self.snapshot_version: int | None = None


class _Append:
    """The scope of one observed append: a plain class, it is on the hot path."""

    __slots__ = ("batch", "observer", "scope", "started", "store", "stream", "system")

    def __init__(
        self, observer: Observer, store: object, stream: str, batch: Sequence[PendingEvent]
    ) -> None:
        self.observer, self.store, self.stream, self.batch = observer, store, stream, batch

    def __enter__(self) -> None:
        self.system = db_system(self.store)
        tracing = self.observer.tracing
        self.scope = (
            None if tracing is None
            else tracing.start_append(self.store, self.system, self.stream, self.batch)
        )
        self.started = time.perf_counter()

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        seconds = time.perf_counter() - self.started
        observer = self.observer
        if self.scope is not None:
            observer.tracing.end(self.scope, exc)  # type: ignore[union-attr]
        if exc is not None:
            observer._failed(self.system, "append", exc, seconds)
            return
        for r in observer.recorders:
            r.appended(self.system, len(self.batch), seconds)


class Observer:
    """Tracing and metric recorders behind one set of hooks."""

    def __init__(self, tracing: Tracing | None, recorders: Sequence[Recorder]) -> None:
        self.tracing = tracing
        self.recorders = tuple(recorders)

    def _failed(self, system: str, operation: str, exc: BaseException, seconds: float) -> None:
        for r in self.recorders:
            if isinstance(exc, ConcurrencyError) and operation == "append":
                r.conflicted(system, seconds)
            else:
                r.failed(system, operation, type(exc).__qualname__, seconds)

    def append(self, store: object, stream: str, batch: Sequence[PendingEvent]) -> _Append:
        """Around one append: a span (whose context goes into the events' metadata) and metrics."""
        return _Append(self, store, stream, batch)

    @contextmanager
    def read_page(self, store: object, after: int, limit: int) -> Iterator[list[Any]]:
        """Around one page of ``read_all``: the caller puts the page into the yielded list."""
        system = db_system(store)
        started = time.perf_counter()
        tracing = self.tracing
        page: list[Any] = []
        try:
            with tracing.read_page(system, after, limit) if tracing else nullcontext() as span:
                yield page
                if span is not None and span.is_recording():
                    span.set_attribute("db.response.returned_rows", len(page))
        except BaseException as exc:
            self._failed(system, "read_all", exc, time.perf_counter() - started)
            raise
        seconds = time.perf_counter() - started
        for r in self.recorders:
            r.read_page(system, len(page), seconds)

    @contextmanager
    def load(self, store: object, stream_id: object, aggregate_class: type) -> Iterator[Load]:
        """Around one repository load; the repository counts through :meth:`Load.counting`."""
        system = db_system(store)
        stream, aggregate_type = str(stream_id), aggregate_class.__name__
        started = time.perf_counter()
        tracing = self.tracing
        try:
            with tracing.load(system, stream, aggregate_type) if tracing else nullcontext() as span:
                load = Load(span)
                yield load
                if span is not None and span.is_recording():
                    span.set_attribute("eskit.events_replayed", load.events)
                    span.set_attribute("eskit.snapshot_used", load.snapshot_version is not None)
                    if load.snapshot_version is not None:
                        span.set_attribute("eskit.snapshot_version", load.snapshot_version)
        except BaseException as exc:
            self._failed(system, "load", exc, time.perf_counter() - started)
            raise
        seconds = time.perf_counter() - started
        for r in self.recorders:
            r.loaded(system, load.events, seconds)

    def batch(self, projection: str, partition: int) -> Any:
        """A span around one projection batch (links to the appends of its events)."""
        return self.tracing.batch(projection, partition) if self.tracing else nullcontext()

    def link_events(self, events: Sequence[Any]) -> None:
        """Link the current span to the spans that appended ``events``."""
        if self.tracing:
            self.tracing.link_events(events)

    def step(self, process: str, step: str, trigger: Any) -> Any:
        """A span around one process-manager step (links to the trigger's append)."""
        return self.tracing.step(process, step, trigger) if self.tracing else nullcontext()

    def publish(self, destination: str, event: Any) -> Any:
        """A span around one relay publish: the hook point for the outbox relay."""
        return self.tracing.publish(destination, event) if self.tracing else nullcontext()


active: Observer | None = None
"""The observer the hooks call, or ``None``: set by :func:`eskit.observability.instrument`."""


PageReader = Callable[[int, int], list[Any]]
AsyncPageReader = Callable[[int, int], Awaitable[list[Any]]]


def page_reader(store: object, read: PageReader) -> PageReader:
    """``read`` (a store's ``_read_all_page``), observed page by page when observing."""
    observer = active
    if observer is None:
        return read

    def observed(after: int, limit: int) -> list[Any]:
        with observer.read_page(store, after, limit) as page:
            page.extend(result := read(after, limit))
        return result

    return observed


def async_page_reader(store: object, read: AsyncPageReader) -> AsyncPageReader:
    """:func:`page_reader` for an async store's ``_read_all_page``."""
    observer = active
    if observer is None:
        return read

    async def observed(after: int, limit: int) -> list[Any]:
        with observer.read_page(store, after, limit) as page:
            page.extend(result := await read(after, limit))
        return result

    return observed
