"""eskit.testing's given/when/then helpers pass on the right events and fail readably."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from eskit import Aggregate, Event, NewEvent, ProjectionFailed, domain_event, handles
from eskit.projections import Projection, Tx
from eskit.testing import assert_same_events, given, given_decider, given_projection
from tests.command_model import Balance, Deposit, Deposited, OverLimit, account


@domain_event("given-test.Opened")
@dataclass(frozen=True)
class Opened:
    owner: str


@domain_event("given-test.Added")
@dataclass(frozen=True)
class Added:
    amount: int


class Tab(Aggregate):
    def __init__(self, tab_id: Any) -> None:
        super().__init__(tab_id)
        self.owner = ""
        self.total = 0

    def open(self, owner: str) -> None:
        if self.owner:
            raise ValueError("already open")
        self.raise_event(Opened(owner))

    def add(self, amount: int) -> None:
        if not self.owner:
            raise ValueError("the tab is not open")
        self.raise_event(Added(amount))
        if self.total > 100:
            self.raise_event("Flagged", {"total": self.total})

    @handles(Opened)
    def _opened(self, event: Opened) -> None:
        self.owner = event.owner

    @handles(Added)
    def _added(self, event: Added) -> None:
        self.total += event.amount

    def handle_Flagged(self, data: dict[str, Any]) -> None:
        pass


# -- aggregates -----------------------------------------------------------------------


def test_given_when_then_passes_on_the_events_the_command_raises() -> None:
    given(Tab, [Opened("ann")]).when(lambda tab: tab.add(5)).then([Added(5)])
    given(Tab).when(lambda tab: tab.open("bob")).then([Opened("bob")])
    given(Tab, [Opened("ann"), Added(99)]).when(lambda tab: tab.add(2)).then(
        [Added(2), ("Flagged", {"total": 101})]
    )


def test_expected_events_may_be_new_events_or_recorded_events() -> None:
    scenario = given(Tab, [Opened("ann")]).when(lambda tab: tab.add(5))
    scenario.then([NewEvent("given-test.Added", {"amount": 5})])
    scenario.then(scenario.aggregate.get_uncommitted_events())  # ids and times are ignored


def test_given_accepts_type_and_data_pairs_and_new_events() -> None:
    given(Tab, [("given-test.Opened", {"owner": "ann"}), NewEvent("given-test.Added",
          {"amount": 50})]).when(lambda tab: tab.add(1)).then_state(lambda tab: tab.total == 51)


def test_then_state_sees_the_aggregate_after_the_command_and_fails_on_false() -> None:
    scenario = given(Tab, [Opened("ann")], aggregate_id="tab-9").when(lambda tab: tab.add(5))
    scenario.then_state(lambda tab: tab.total == 5 and tab.version == 2)
    assert scenario.aggregate.aggregate_id == "tab-9"
    with pytest.raises(AssertionError, match="the state check failed"):
        scenario.then_state(lambda tab: tab.total == 6)


def test_a_second_when_runs_on_the_state_the_first_left_and_sees_only_its_events() -> None:
    given(Tab, [Opened("ann")]).when(lambda tab: tab.add(60)).then([Added(60)]) \
        .when(lambda tab: tab.add(50)).then([Added(50), ("Flagged", {"total": 110})])


def test_then_raises_passes_on_the_error_and_returns_it() -> None:
    error = given(Tab).when(lambda tab: tab.add(1)).then_raises(ValueError, match="not open")
    assert str(error) == "the tab is not open"


def test_a_failing_then_shows_expected_and_actual_events_and_the_first_difference() -> None:
    scenario = given(Tab, [Opened("ann")]).when(lambda tab: tab.add(5))
    with pytest.raises(AssertionError) as raised:
        scenario.then([Added(6)])
    message = str(raised.value)
    assert "event 1 (given-test.Added) has other data: amount: expected 6, got 5" in message
    assert "expected:\n  1. given-test.Added {'amount': 6}" in message
    assert "actual:\n  1. given-test.Added {'amount': 5}" in message


def test_a_failing_then_names_a_wrong_type_and_a_wrong_count() -> None:
    scenario = given(Tab, [Opened("ann")]).when(lambda tab: tab.add(5))
    with pytest.raises(AssertionError, match=re.escape("event 1 is a given-test.Added, expected")):
        scenario.then([Opened("x")])
    with pytest.raises(AssertionError, match=re.escape("expected 2 event(s), got 1")):
        scenario.then([Added(5), Added(1)])
    with pytest.raises(AssertionError, match=re.escape("(no events)")):
        given(Tab, [Opened("ann")]).when(lambda tab: None).then([Added(1)])


def test_then_fails_when_the_command_raised_and_then_raises_when_it_did_not() -> None:
    with pytest.raises(AssertionError, match="the command raised ValueError: the tab is not open"):
        given(Tab).when(lambda tab: tab.add(1)).then([Added(1)])
    with pytest.raises(AssertionError, match="expected KeyError, but the command raised nothing"):
        given(Tab, [Opened("a")]).when(lambda tab: tab.add(1)).then_raises(KeyError)
    with pytest.raises(AssertionError, match="expected KeyError, but the command raised Value"):
        given(Tab).when(lambda tab: tab.add(1)).then_raises(KeyError)
    with pytest.raises(AssertionError, match="does not match 'closed'"):
        given(Tab).when(lambda tab: tab.add(1)).then_raises(ValueError, match="closed")


def test_then_before_when_is_a_clear_mistake() -> None:
    with pytest.raises(AssertionError, match=re.escape("call .when(command)")):
        given(Tab).then([])


def test_a_missing_or_extra_field_is_named_as_missing() -> None:
    with pytest.raises(AssertionError, match="note: expected <missing>, got 'x'"):
        assert_same_events([("T", {"n": 1})], [("T", {"n": 1, "note": "x"})])


def test_a_non_event_in_the_expectation_is_reported() -> None:
    with pytest.raises(AssertionError, match="is not an event"):
        assert_same_events([object()], [])


# -- deciders -------------------------------------------------------------------------


def test_given_decider_when_then_on_decided_events_state_and_refusals() -> None:
    given_decider(account, [Deposited(10)]).when(Deposit("a", 5)).then([Deposited(5)]) \
        .then_state(lambda state: state == Balance(15, 2))
    given_decider(account).when(Deposit("a", 0)).then([])
    given_decider(account, [Deposited(990)]).when(Deposit("a", 20)).then_raises(
        OverLimit, match="over 1000"
    )


def test_a_failing_decider_then_shows_both_sides() -> None:
    with pytest.raises(AssertionError) as raised:
        given_decider(account, [Deposited(10)]).when(Deposit("a", 5)).then([Deposited(50)])
    assert "amount: expected 50, got 5" in str(raised.value)
    with pytest.raises(AssertionError, match="raised OverLimit"):
        given_decider(account, [Deposited(999)]).when(Deposit("a", 5)).then([Deposited(5)])


# -- projections ----------------------------------------------------------------------


class Totals(Projection):
    """A read model in Python attributes: the in-memory target's kind."""

    name = "given-test.totals"

    def __init__(self) -> None:
        super().__init__()
        self.by_stream: dict[str, int] = {}

    @handles(Added)
    def _added(self, event: Event, tx: Tx) -> None:
        added: Added = event.to_domain()
        key = str(event.aggregate_id)
        self.by_stream[key] = self.by_stream.get(key, 0) + added.amount


class TotalsTable(Projection):
    """The same read model in a SQL table."""

    name = "given-test.totals_table"
    tables = ("given_totals",)

    def setup(self, tx: Tx) -> None:
        tx.execute(f"CREATE TABLE IF NOT EXISTS {tx.table('given_totals')} "
                   "(stream TEXT PRIMARY KEY, total INTEGER NOT NULL)")

    @handles(Added)
    def _added(self, event: Event, tx: Tx) -> None:
        amount = event.to_domain(expect=Added).amount
        if amount < 0:
            raise ValueError("negative")
        tx.execute(
            f"INSERT INTO {tx.table('given_totals')} VALUES (?, ?) ON CONFLICT (stream) "
            "DO UPDATE SET total = total + excluded.total",
            (str(event.aggregate_id), amount),
        )


def test_given_projection_runs_events_into_an_in_memory_read_model() -> None:
    view = given_projection(Totals, [Added(1), ("t-2", Added(5)), Added(2), ("t-2", Opened("x"))])
    assert view.projection.by_stream == {"given-stream": 3, "t-2": 5}
    view.given_more([("t-3", Added(7))])
    assert view.projection.by_stream["t-3"] == 7


def test_given_projection_gives_sql_projections_a_throwaway_sqlite_file() -> None:
    with given_projection(TotalsTable, [("a", Added(1)), ("b", Added(2)), ("a", Added(3))],
                          target="sqlite") as view:
        rows = view.query("SELECT stream, total FROM given_totals ORDER BY stream")
        assert rows == [("a", 4), ("b", 2)]
        assert view.query("SELECT total FROM given_totals WHERE stream = ?", ["b"]) == [(2,)]


def test_given_projection_raises_a_failing_handler_at_once() -> None:
    with pytest.raises(ProjectionFailed, match="negative"):
        given_projection(TotalsTable, [Added(-1)], target="sqlite")


def test_query_on_the_in_memory_target_says_it_needs_sql() -> None:
    with pytest.raises(AssertionError, match="needs a SQL target"):
        given_projection(Totals, []).query("SELECT 1")
