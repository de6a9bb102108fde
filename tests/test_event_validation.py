"""Typed events are checked against their annotations before they are stored."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal, NewType, Optional

import pytest

from eskit import (
    Aggregate,
    EventRegistry,
    InMemoryEventStore,
    InvalidInputError,
    domain_event,
    handles,
)

REG = EventRegistry()
ONE = uuid.UUID(int=1)
AccountNo = NewType("AccountNo", str)


class Kind(Enum):
    CASH = "cash"
    CARD = "card"


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class Node:
    name: str
    children: tuple[Node, ...] = ()


@domain_event("valid.Deposited", registry=REG)
@dataclass(frozen=True)
class Deposited:
    amount: Decimal


@domain_event("valid.Everything", registry=REG)
@dataclass(frozen=True)
class Everything:
    text: str = "t"
    count: int = 1
    ratio: float = 0.5
    flag: bool = False
    raw: bytes = b""
    ident: uuid.UUID = ONE
    at: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    day: date = date(2026, 1, 1)
    clock: time = time(12)
    span: timedelta = timedelta(1)
    kind: Kind = Kind.CASH
    maybe: int | None = None
    old_maybe: Optional[str] = None  # noqa: UP045 - the spelling under test
    either: int | str = 0
    items: list[int] = field(default_factory=list)
    lookup: dict[str, Decimal] = field(default_factory=dict)
    by_id: dict[uuid.UUID, int] = field(default_factory=dict)
    pair: tuple[int, str] = (0, "")
    many: tuple[int, ...] = ()
    tags: frozenset[str] = frozenset()
    seq: Sequence[int] = ()
    mapping: Mapping[str, int] = field(default_factory=dict)
    price: Money = Money(Decimal(0), "EUR")
    tree: Node = Node("root")
    mode: Literal["a", "b"] = "a"
    account: AccountNo = AccountNo("x")
    noted: Annotated[int, "a note"] = 0
    anything: Any = None


def check(event: object) -> None:
    REG.from_domain(event)


def test_a_float_or_a_string_for_a_decimal_field_is_refused_naming_type_and_field() -> None:
    for bad in (0.1, "ten", 10):
        with pytest.raises(InvalidInputError) as caught:
            check(Deposited(bad))  # type: ignore[arg-type]
        message = str(caught.value)
        assert "'valid.Deposited'" in message
        assert "field 'amount'" in message
        assert "expected Decimal" in message
    check(Deposited(Decimal("0.1")))


def test_a_bad_event_is_refused_before_the_aggregate_or_the_store_sees_it() -> None:
    class Account(Aggregate):
        registry = REG

        def __init__(self, aggregate_id: Any) -> None:
            super().__init__(aggregate_id)
            self.balance = Decimal(0)

        @handles(Deposited)
        def _deposited(self, event: Deposited) -> None:
            self.balance += event.amount

    account = Account("a-1")
    with pytest.raises(InvalidInputError, match="amount"):
        account.raise_event(Deposited(0.1))  # type: ignore[arg-type]
    assert (account.version, account.get_uncommitted_events()) == (0, [])
    store = InMemoryEventStore(registry=REG)
    with pytest.raises(InvalidInputError, match="amount"):
        store.append("a-1", [Deposited(Decimal(1)), Deposited("ten")])  # type: ignore[arg-type]
    assert store.head_position() == 0, "the whole batch is refused"


def test_every_supported_annotation_accepts_good_values() -> None:
    check(Everything())
    check(Everything(
        ratio=3, maybe=4, old_maybe="s", either="x", items=[1, 2], lookup={"a": Decimal(1)},
        by_id={uuid.UUID(int=2): 3}, pair=(1, "a"), many=(1, 2, 3), tags=frozenset({"a"}),
        seq=[1, 2], mapping={"a": 1}, tree=Node("r", (Node("c"),)), mode="b",
        anything=object(),
    ))


@pytest.mark.parametrize(
    ("field_name", "bad", "expected"),
    [
        ("text", 1, "expected str"),
        ("count", True, "expected int, got bool"),
        ("count", 1.0, "expected int"),
        ("ratio", "0.5", "expected float"),
        ("ratio", False, "expected float"),
        ("flag", 1, "expected bool"),
        ("raw", "bytes?", "expected bytes"),
        ("ident", str(uuid.UUID(int=1)), "expected uuid.UUID"),
        ("at", "2026-01-01", "expected datetime"),
        ("at", datetime(2026, 1, 1), "timezone-aware"),
        ("day", datetime(2026, 1, 1, tzinfo=UTC), "expected date"),
        ("clock", "12:00", "expected datetime.time"),
        ("span", 1, "expected datetime.timedelta"),
        ("kind", "cash", "Kind"),
        ("maybe", "4", "expected int"),
        ("old_maybe", 4, "expected str"),
        ("either", 1.5, "expected int | str"),
        ("items", [1, "2"], "[1]: expected int"),
        ("items", (1, 2), "expected list"),
        ("lookup", {"a": 1.5}, "['a']: expected Decimal"),
        ("by_id", {"k": 1}, "[key 'k']: expected uuid.UUID"),
        ("pair", (1, 2), "[1]: expected str"),
        ("pair", (1,), "of 2 items"),
        ("many", (1, "x"), "[1]: expected int"),
        ("tags", frozenset({1}), "expected str"),
        ("seq", "abc", "expected collections.abc.Sequence[int]"),
        ("mapping", [("a", 1)], "expected collections.abc.Mapping[str, int]"),
        ("price", Money(0.5, "EUR"), ".amount: expected Decimal"),  # type: ignore[arg-type]
        ("tree", Node("r", (Node(1),)), ".children: [0]: .name: expected str"),  # type: ignore[arg-type]
        ("mode", "c", "expected one of 'a', 'b'"),
        ("account", 5, "expected str"),
        ("noted", "0", "expected int"),
    ],
)
def test_a_wrong_value_is_refused_saying_what_was_expected(
    field_name: str, bad: object, expected: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check(Everything(**{field_name: bad}))  # type: ignore[arg-type]
    assert f"field {field_name!r}" in str(caught.value)
    assert expected in str(caught.value)


def test_naive_datetimes_are_allowed_when_the_registry_opts_out() -> None:
    relaxed = EventRegistry(naive_datetimes=True)

    @domain_event("valid.Stamped", registry=relaxed)
    @dataclass(frozen=True)
    class Stamped:
        at: datetime

    relaxed.from_domain(Stamped(datetime(2026, 1, 1)))
    store = InMemoryEventStore(registry=relaxed)
    store.append("s", [Stamped(datetime(2026, 1, 1))])
    assert store.read_stream("s")[0].event_data == {"at": datetime(2026, 1, 1)}
    strict = InMemoryEventStore(registry=REG)
    with pytest.raises(InvalidInputError, match="no time zone"):
        strict.append("s", [Everything(anything={"when": datetime(2026, 1, 1)})])


def test_checking_can_be_turned_off_per_class() -> None:
    @domain_event("valid.Unchecked", registry=REG, check_types=False)
    @dataclass(frozen=True)
    class Unchecked:
        amount: Decimal

    assert REG.from_domain(Unchecked(0.5))[1] == {"amount": 0.5}  # type: ignore[arg-type]


def test_an_unresolvable_annotation_is_not_checked_and_the_rest_is() -> None:
    @domain_event("valid.Forward", registry=REG)
    @dataclass(frozen=True)
    class Forward:
        later: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821
        amount: Decimal

    REG.from_domain(Forward(object(), Decimal(1)))
    with pytest.raises(InvalidInputError, match="amount"):
        REG.from_domain(Forward(object(), 1.5))  # type: ignore[arg-type]


def test_stored_events_are_not_checked_on_the_way_back() -> None:
    store = InMemoryEventStore(registry=REG)
    store.append("s", [Deposited(Decimal(1))])
    from eskit import NewEvent

    store.append("s", [NewEvent("valid.Deposited", {"amount": 0.5})])
    assert [e.to_domain(REG).amount for e in store.read_stream("s")] == [Decimal(1), 0.5]
