"""Given/when/then helpers for testing aggregates, deciders and projections.

Each reads as the rule it checks and fails with a plain ``AssertionError``
showing the expected and the actual events, so pytest reports it like any
assert::

    given(BankAccount, [AccountOpened("A-1", "Ann", Decimal(0))]) \\
        .when(lambda account: account.deposit(Decimal(10))) \\
        .then([MoneyDeposited(Decimal(10))])

    given_decider(account, [Deposited(990)]).when(Deposit("a", 20)).then_raises(OverLimit)

    view = given_projection(AccountBalances, [AccountOpened("A-1", "Ann", Decimal(5))],
                            target="sqlite")
    assert view.query("SELECT balance_cents FROM bank_account_balances") == [(500,)]

Events are compared by type and data only, never by id, timestamp, version or
metadata: an expected event is a domain event instance, a
:class:`~eskit.NewEvent`, an :class:`~eskit.Event`, or a ``(type, data)`` pair.
Given events are stored in a throwaway in-memory store and read back, so the
aggregate or projection sees them exactly as it would in production (codec,
upcasters and all). Nothing here touches a real store.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar

from eskit.aggregate import Aggregate
from eskit.decider import Decider, fold
from eskit.errors import AggregateNotFound
from eskit.events import Event, EventRegistry, NewEvent, StreamId, default_registry
from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.failures import RetryPolicy
from eskit.projections.projection import Projection
from eskit.projections.runner import ProjectionRunner
from eskit.projections.targets.memory import InMemoryTarget
from eskit.projections.targets.sqlite import SQLiteTarget
from eskit.repository import Repository
from eskit.stores.memory import InMemoryEventStore

__all__ = [
    "AggregateScenario",
    "DeciderScenario",
    "ProjectionScenario",
    "assert_same_events",
    "given",
    "given_decider",
    "given_projection",
]

A = TypeVar("A", bound=Aggregate)
C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")
P = TypeVar("P", bound=Projection)

GIVEN_STREAM = "given-stream"
"""The stream id given events land in unless they say otherwise."""

_NOTHING = object()


# -- comparing events by type and data --------------------------------------------------


def _shape(event: object, registry: EventRegistry) -> tuple[str, Any]:
    if isinstance(event, Event | NewEvent):
        return event.event_type, event.event_data
    if (
        isinstance(event, tuple) and len(event) == 2 and isinstance(event[0], str)
        and isinstance(event[1], Mapping)
    ):
        return event[0], dict(event[1])
    if registry.is_domain_event(event):
        name, data, _ = registry.from_domain(event)
        return name, data
    raise AssertionError(
        f"{event!r} is not an event: expected a registered domain event, a NewEvent, "
        "an Event or a (type, data) pair"
    )


def _show(data: Mapping[str, Any], key: str) -> str:
    return repr(data[key]) if key in data else "<missing>"


def _listing(shapes: Sequence[tuple[str, Any]]) -> str:
    if not shapes:
        return "  (no events)"
    return "\n".join(f"  {i}. {name} {data!r}" for i, (name, data) in enumerate(shapes, 1))


def assert_same_events(
    expected: Sequence[object], actual: Sequence[object],
    registry: EventRegistry = default_registry,
) -> None:
    """Fail unless ``actual`` has the events of ``expected``, same types and data, in order.

    The message lists both sides and names the first event that differs.
    """
    __tracebackhide__ = True
    want = [_shape(e, registry) for e in expected]
    got = [_shape(e, registry) for e in actual]
    if want == got:
        return
    first = next(
        (i for i, (w, g) in enumerate(zip(want, got, strict=False)) if w != g),
        min(len(want), len(got)),
    )
    if first < min(len(want), len(got)):
        (w_name, w_data), (g_name, g_data) = want[first], got[first]
        if w_name != g_name:
            why = f"event {first + 1} is a {g_name}, expected a {w_name}"
        else:
            keys = sorted({*w_data, *g_data}, key=str)
            diffs = [
                f"{k}: expected {_show(w_data, k)}, got {_show(g_data, k)}"
                for k in keys if w_data.get(k, _NOTHING) != g_data.get(k, _NOTHING)
            ]
            why = f"event {first + 1} ({g_name}) has other data: {'; '.join(diffs)}"
    else:
        why = f"expected {len(want)} event(s), got {len(got)}"
    raise AssertionError(
        f"the events differ: {why}\nexpected:\n{_listing(want)}\nactual:\n{_listing(got)}"
    )


def _raised_instead(error: BaseException) -> AssertionError:
    return AssertionError(f"expected events, but the command raised {type(error).__name__}: "
                          f"{error}")


class _Outcome:
    """What a ``when`` did: the events recorded, or the error raised (internal)."""

    def __init__(self, registry: EventRegistry) -> None:
        self.registry = registry
        self.events: list[object] = []
        self.error: BaseException | None = None

    def check_events(self, expected: Sequence[object]) -> None:
        __tracebackhide__ = True
        if self.error is not None:
            raise _raised_instead(self.error) from self.error
        assert_same_events(expected, self.events, self.registry)

    def check_raises(self, error_type: type[BaseException], match: str | None) -> BaseException:
        __tracebackhide__ = True
        error = self.error
        if error is None:
            shapes = [_shape(e, self.registry) for e in self.events]
            raise AssertionError(
                f"expected {error_type.__name__}, but the command raised nothing and "
                f"recorded:\n{_listing(shapes)}"
            )
        if not isinstance(error, error_type):
            raise AssertionError(
                f"expected {error_type.__name__}, but the command raised "
                f"{type(error).__name__}: {error}"
            ) from error
        if match is not None and re.search(match, str(error)) is None:
            raise AssertionError(
                f"{type(error).__name__} was raised, but its message {str(error)!r} does not "
                f"match {match!r}"
            ) from error
        return error


# -- aggregates -----------------------------------------------------------------------


class AggregateScenario(Generic[A]):
    """An aggregate after its given events; :meth:`when` runs a command on it."""

    def __init__(self, aggregate: A, registry: EventRegistry) -> None:
        self.aggregate = aggregate
        """The aggregate: after the given events, then after the command."""
        self._outcome: _Outcome | None = None
        self._registry = registry

    def when(self, command: Callable[[A], object]) -> AggregateScenario[A]:
        """Run ``command(aggregate)``, keeping the events it raises or the error.

        A second ``when`` runs on the aggregate as the first left it, and its
        ``then`` sees only its own events.
        """
        outcome = _Outcome(self._registry)
        before = len(self.aggregate.get_uncommitted_events())
        try:
            command(self.aggregate)
        except Exception as error:  # kept for then_raises; then() reports it
            outcome.error = error
        outcome.events = list(self.aggregate.get_uncommitted_events()[before:])
        self._outcome = outcome
        return self

    def _done(self) -> _Outcome:
        if self._outcome is None:
            raise AssertionError("call .when(command) before .then...")
        return self._outcome

    def then(self, expected: Sequence[object]) -> AggregateScenario[A]:
        """Assert the command raised exactly these events (type and data), in order."""
        __tracebackhide__ = True
        self._done().check_events(expected)
        return self

    def then_raises(
        self, error_type: type[BaseException], *, match: str | None = None
    ) -> BaseException:
        """Assert the command raised ``error_type``, its message matching ``match``.

        ``match`` is a regular expression searched in the message, as in
        ``pytest.raises``. Returns the error, for further checks.
        """
        __tracebackhide__ = True
        return self._done().check_raises(error_type, match)

    def then_state(self, check: Callable[[A], object]) -> AggregateScenario[A]:
        """Assert on the aggregate after the command: ``check`` returns true or asserts."""
        __tracebackhide__ = True
        outcome = self._done()
        if outcome.error is not None:
            raise _raised_instead(outcome.error) from outcome.error
        if check(self.aggregate) is False:
            raise AssertionError(f"the state check failed on {self.aggregate!r}: "
                                 f"{vars(self.aggregate)}")
        return self


def given(
    aggregate_class: type[A], events: Sequence[object] = (), *,
    aggregate_id: StreamId = GIVEN_STREAM,
) -> AggregateScenario[A]:
    """An aggregate of ``aggregate_class`` that has gone through ``events``.

    ``events`` are domain events, :class:`~eskit.NewEvent` or ``(type, data)``
    pairs, in the order they happened; none gives a blank aggregate (for a
    creation command). They are stored in stream ``aggregate_id`` of an
    in-memory store and loaded through a :class:`~eskit.Repository`, so the
    handlers see them as they would after a real load.
    """
    registry = aggregate_class.registry
    store = InMemoryEventStore(registry=registry)
    if events:
        store.append(aggregate_id, [_appendable(e) for e in events])
    try:
        aggregate = Repository(store).get(aggregate_id, aggregate_class)
    except AggregateNotFound:
        aggregate = aggregate_class.create_blank(aggregate_id)
    return AggregateScenario(aggregate, registry)


def _appendable(item: object) -> object:
    """A given event as the store takes it: a (type, data) pair or Event become NewEvent."""
    if isinstance(item, Event):
        return NewEvent(item.event_type, item.event_data, item.metadata,
                        schema_version=item.schema_version)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Mapping):
        return NewEvent(item[0], dict(item[1]))
    return item


# -- deciders -------------------------------------------------------------------------


class DeciderScenario(Generic[C, S, E]):
    """A decider's state after the given events; :meth:`when` decides a command."""

    def __init__(self, decider: Decider[C, S, E], state: S, registry: EventRegistry) -> None:
        self.decider = decider
        self.state = state
        """The state the given events fold to; after :meth:`when`, the state after the
        decided events too."""
        self._registry = registry
        self._outcome: _Outcome | None = None

    def when(self, command: C) -> DeciderScenario[C, S, E]:
        """Decide ``command`` on the state, keeping the events or the error."""
        outcome = _Outcome(self._registry)
        try:
            outcome.events = list(self.decider.decide(command, self.state))
        except Exception as error:  # kept for then_raises; then() reports it
            outcome.error = error
        else:
            # The events a handler would store, evolved as it would after the append.
            self.state = fold_from(self.decider, self.state, outcome.events)
        self._outcome = outcome
        return self

    def _done(self) -> _Outcome:
        if self._outcome is None:
            raise AssertionError("call .when(command) before .then...")
        return self._outcome

    def then(self, expected: Sequence[object]) -> DeciderScenario[C, S, E]:
        """Assert ``decide`` returned exactly these events (type and data), in order."""
        __tracebackhide__ = True
        self._done().check_events(expected)
        return self

    def then_raises(
        self, error_type: type[BaseException], *, match: str | None = None
    ) -> BaseException:
        """Assert ``decide`` raised ``error_type``, its message matching ``match`` (a regex)."""
        __tracebackhide__ = True
        return self._done().check_raises(error_type, match)

    def then_state(self, check: Callable[[S], object]) -> DeciderScenario[C, S, E]:
        """Assert on the state after the decided events: ``check`` returns true or asserts."""
        __tracebackhide__ = True
        outcome = self._done()
        if outcome.error is not None:
            raise _raised_instead(outcome.error) from outcome.error
        if check(self.state) is False:
            raise AssertionError(f"the state check failed on {self.state!r}")
        return self


def fold_from(decider: Decider[Any, S, Any], state: S, events: Sequence[object]) -> S:
    for event in events:
        state = decider.evolve(state, event)
    return state


def given_decider(
    decider: Decider[C, S, E], events: Sequence[E] = (), *,
    registry: EventRegistry | None = None,
) -> DeciderScenario[C, S, E]:
    """A decider's state after ``events`` (folded as given, in order).

    ``registry`` names the stored type of domain events in messages and
    comparisons (default: the default registry).
    """
    return DeciderScenario(decider, fold(decider, events), registry or default_registry)


# -- projections ----------------------------------------------------------------------


class ProjectionScenario(Generic[P]):
    """A projection that has handled the given events, and the read model it keeps.

    ``projection`` is the projection object (an in-memory read model lives in
    it), ``target`` the target, ``store`` the in-memory store that holds the
    given events. Use it as a context manager, or call :meth:`close`, to delete
    a temporary SQLite target's file at once (else it goes when the scenario is
    garbage collected). A target you passed in is yours: it is never closed here.
    """

    def __init__(self, projection: P, target: ProjectionTarget, store: InMemoryEventStore,
                 folder: tempfile.TemporaryDirectory[str] | None, *, owns_target: bool) -> None:
        self.projection = projection
        self.target = target
        self.store = store
        self.runner = ProjectionRunner(store, projection, target, retry=RetryPolicy(max_attempts=1))
        self._folder = folder
        self._owns_target = owns_target
        self.runner.run_until_caught_up()

    def given_more(self, events: Sequence[object]) -> ProjectionScenario[P]:
        """Append more events (as :func:`given_projection` takes them) and catch up."""
        for stream_id, event in _pairs(events):
            self.store.append(stream_id, [event])
        self.runner.run_until_caught_up()
        return self

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on a SQL target's read model (views by their plain names).

        ``params`` use the target's own placeholders (``?`` on SQLite, ``%s`` on
        PostgreSQL).
        """
        if self.target.dialect == "memory":
            raise AssertionError(
                "query() needs a SQL target: given_projection(..., target='sqlite')"
            )
        with self.target.transaction() as conn:
            return [tuple(row) for row in conn.execute(sql, tuple(params)).fetchall()]

    def close(self) -> None:
        """Close the target this scenario made and delete its file (a target passed in stays)."""
        if self._owns_target:
            self.target.close()
        self.store.close()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> ProjectionScenario[P]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pairs(events: Sequence[object]) -> list[tuple[StreamId, object]]:
    pairs: list[tuple[StreamId, object]] = []
    for item in events:
        if isinstance(item, Event):
            pairs.append((item.aggregate_id, _appendable(item)))
        elif isinstance(item, tuple) and len(item) == 2 and not isinstance(item[1], Mapping):
            pairs.append((item[0], _appendable(item[1])))  # (stream id, event)
        else:
            pairs.append((GIVEN_STREAM, _appendable(item)))
    return pairs


def given_projection(
    projection_factory: Callable[[], P], events: Sequence[object] = (), *,
    target: Literal["memory", "sqlite"] | ProjectionTarget = "memory",
) -> ProjectionScenario[P]:
    """Run ``events`` through a new projection on a throwaway store and target.

    ``events`` are domain events, :class:`~eskit.NewEvent`, ``(type, data)``
    pairs (all in one stream, ``"given-stream"``), ``(stream id, event)`` pairs
    or recorded :class:`~eskit.Event` (in their own streams), appended one by
    one in the order given. ``target="memory"`` suits projections that keep their
    read model in Python attributes; ``"sqlite"`` gives SQL projections a
    temporary SQLite file (query it with :meth:`ProjectionScenario.query`); or
    pass a target of your own (a :class:`~eskit.PostgresTarget` on a fresh
    schema, for PostgreSQL's SQL). A handler that fails raises
    :class:`~eskit.ProjectionFailed` here, at once.
    """
    projection = projection_factory()
    store = InMemoryEventStore(registry=projection.registry)
    for stream_id, event in _pairs(events):
        store.append(stream_id, [event])
    folder: tempfile.TemporaryDirectory[str] | None = None
    chosen: ProjectionTarget
    if target == "memory":
        chosen = InMemoryTarget()
    elif target == "sqlite":
        folder = tempfile.TemporaryDirectory(prefix="eskit-given-")
        chosen = SQLiteTarget(f"{folder.name}/read_model.db")
    elif isinstance(target, ProjectionTarget):
        chosen = target
    else:
        raise AssertionError(f"target must be 'memory', 'sqlite' or a ProjectionTarget, "
                             f"not {target!r}")
    owns = chosen is not target
    try:
        return ProjectionScenario(projection, chosen, store, folder, owns_target=owns)
    except BaseException:
        if owns:  # ours: close it and delete its file now
            chosen.close()
        if folder is not None:
            folder.cleanup()
        raise
