"""Pydantic models as domain events: the same exact round trip as a frozen dataclass."""

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel, ConfigDict, Field

import eskit
from eskit import Aggregate, NewEvent, Repository, domain_event, handles
from tests.conftest import new_schema_name


class Currency(Enum):
    EUR = "EUR"
    CHF = "CHF"


class Line(BaseModel):  # nested: need not be frozen, nor registered
    sku: str
    price: Decimal
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Address:
    street: str
    moved_in: datetime


@domain_event("pydantic_test.OrderPlaced")
class OrderPlaced(BaseModel):
    model_config = ConfigDict(frozen=True)

    order_id: UUID
    total: Decimal
    placed_at: datetime
    currency: Currency
    lines: tuple[Line, ...]
    ship_to: Address | None = None
    note: str = Field(default="", alias="comment")


@domain_event("pydantic_test.Tagged")
class Tagged(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    label: str


class Order(Aggregate):
    def __init__(self, order_id):
        super().__init__(order_id)
        self.placed: OrderPlaced | None = None

    @handles(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.placed = event


def _placed() -> OrderPlaced:
    zurich = timezone(timedelta(hours=1))
    return OrderPlaced(
        order_id=uuid4(), total=Decimal("10.50"), placed_at=datetime(2026, 1, 2, 3, 4, 5,
                                                                         678901, tzinfo=zurich),
        currency=Currency.CHF,
        lines=(Line(sku="pen", price=Decimal("0.10"), tags=frozenset({"a", "b"})),
               Line(sku="book", price=Decimal("10.40"))),
        ship_to=Address("Main St 1", datetime(2020, 5, 6, tzinfo=UTC)),
        comment="ring twice",
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[eskit.EventStore]:
    if request.param == "memory":
        opened = eskit.open_store("memory://")
    elif request.param == "sqlite":
        opened = eskit.open_store(tmp_path / "events.db")
    else:
        opened = eskit.open_store(request.getfixturevalue("postgres_dsn"),
                                  schema=new_schema_name())
    yield opened
    opened.close()


def test_a_frozen_pydantic_event_round_trips_exactly_through_every_store(
        store: eskit.EventStore) -> None:
    event = _placed()
    order = Order(uuid4())
    order.raise_event(event)
    Repository(store).save(order)

    again = Repository(store).get(order.aggregate_id, Order)
    assert again.placed == event
    assert type(again.placed) is OrderPlaced
    assert again.placed.total.as_tuple() == Decimal("10.50").as_tuple()  # not 10.5
    assert again.placed.placed_at.utcoffset() == timedelta(hours=1)
    assert type(again.placed.lines) is tuple
    assert type(again.placed.lines[0]) is Line
    assert again.placed.lines[0].tags == frozenset({"a", "b"})
    assert type(again.placed.ship_to) is Address
    stored = store.read_stream(order.aggregate_id)[0]
    assert stored.event_type == "pydantic_test.OrderPlaced"
    assert "note" in stored.event_data, "stored under the field name, not the alias"


def test_extra_fields_of_a_model_that_allows_them_are_kept(store: eskit.EventStore) -> None:
    tagged = Tagged(label="x", colour="red", weight=Decimal("1.5"))
    kind, data, _ = eskit.events.default_registry.from_domain(tagged)
    store.append("t-1", [NewEvent(kind, data)])
    back = store.read_stream("t-1")[0].to_domain(expect=Tagged)
    assert back == tagged
    assert back.model_extra == {"colour": "red", "weight": Decimal("1.5")}


def test_a_mutable_model_is_refused_as_a_domain_event() -> None:
    class Loose(BaseModel):
        n: int

    with pytest.raises(eskit.InvalidInputError, match="frozen"):
        domain_event("pydantic_test.Loose")(Loose)


def test_a_naive_datetime_is_refused_before_anything_is_written(store: eskit.EventStore) -> None:
    event = _placed().model_copy(update={"placed_at": datetime(2026, 1, 2)})
    order = Order(uuid4())
    with pytest.raises(eskit.InvalidInputError, match="naive"):
        order.raise_event(event)
    Repository(store).save(order)
    assert store.read_stream(order.aggregate_id) == []


def test_stored_data_that_no_longer_fits_the_model_is_a_decoding_error(
        store: eskit.EventStore) -> None:
    store.append("o-1", [NewEvent("pydantic_test.Tagged", {"label": {"not": "text"}},
                                  schema_version=1)])
    with pytest.raises(eskit.DecodingError, match="o-1"):
        store.read_stream("o-1")[0].to_domain()


def test_a_registered_name_survives_moving_the_model() -> None:
    @eskit.register_type
    class Point(BaseModel):
        x: int

    encoded = eskit.codec.encode({"p": Point(x=1)})
    assert b"Point" in encoded
    assert eskit.codec.decode(encoded) == {"p": Point(x=1)}


def test_eskit_loads_its_pydantic_support_only_once_pydantic_is_imported() -> None:
    code = """
import sys
from decimal import Decimal
import eskit
assert "pydantic" not in sys.modules, "importing eskit imports pydantic"
from pydantic import BaseModel

class Price(BaseModel):
    amount: Decimal

data = eskit.codec.decode(eskit.codec.encode({"price": Price(amount=Decimal("1.10"))}))
assert data == {"price": Price(amount=Decimal("1.10"))}, data
assert str(data["price"].amount) == "1.10"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.stdout.strip() == "ok", result.stderr


def test_a_model_defined_again_decodes_into_its_newest_class() -> None:
    # A module reloaded (or a script run twice) defines its classes again: the events of
    # the new definition hold nested values of the new classes, which pydantic requires.
    def define() -> tuple[type, type]:
        class Part(BaseModel):
            n: int

        @domain_event("pydantic_test.Assembled")
        class Assembled(BaseModel):
            model_config = ConfigDict(frozen=True)
            parts: tuple[Part, ...]

        return Part, Assembled

    store = eskit.open_store("memory://")
    for _ in range(2):
        part, assembled = define()
        event = assembled(parts=(part(n=1),))
        kind, data, _ = eskit.events.default_registry.from_domain(event)
        stream = str(uuid4())
        store.append(stream, [NewEvent(kind, data)])
        assert store.read_stream(stream)[0].to_domain() == event
