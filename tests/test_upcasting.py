"""Schema evolution: events written by old code load through today's code, unchanged on disk."""

import shutil
import sqlite3
import uuid
import warnings
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    Aggregate,
    DecodingError,
    EskitDeprecationWarning,
    EventRegistry,
    InMemoryEventStore,
    InvalidInputError,
    NewEvent,
    Repository,
    SQLiteEventStore,
    domain_event,
    handles,
)
from eskit.upcasting import SPLIT_KEY
from tests.fixtures.make_v1_store import CUSTOMER

FIXTURE = Path(__file__).parent / "fixtures" / "v1_customers.db"

# --------------------------------------------------------------------------- today's code (v3)

V3 = EventRegistry()


@domain_event("legacy.CustomerRegistered", version=3, registry=V3)
@dataclass(frozen=True)
class CustomerRegistered:
    first_name: str
    last_name: str
    email: str
    phone: str


@V3.upcaster("legacy.CustomerRegistered", from_version=1)
def _split_name(data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first_name": first, "last_name": last}


@V3.upcaster("legacy.CustomerRegistered", from_version=2)
def _add_phone(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "phone": ""}


@domain_event("legacy.AddressChanged", aliases=["legacy.CustomerMoved"], registry=V3)
@dataclass(frozen=True)
class AddressChanged:
    address: str


@domain_event("legacy.PointsAwarded", version=2, registry=V3)
@dataclass(frozen=True)
class PointsAwarded:
    points: Decimal  # was a float; "reason" was removed


@V3.upcaster("legacy.PointsAwarded", from_version=1)
def _points_as_decimal(data: dict[str, Any]) -> dict[str, Any]:
    return {"points": Decimal(str(data["points"]))}


@domain_event("legacy.OrderPlaced", registry=V3)
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str


@domain_event("legacy.OrderPaid", registry=V3)
@dataclass(frozen=True)
class OrderPaid:
    order_id: str
    amount: Decimal


@V3.split("legacy.OrderPlacedAndPaid")
def _split_order(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("legacy.OrderPlaced", {"order_id": data["order_id"]}),
        ("legacy.OrderPaid", {"order_id": data["order_id"], "amount": Decimal(data["amount"])}),
    ]


@domain_event("legacy.NewsletterSubscribed", deprecated="newsletters moved to the CRM",
              registry=V3)
@dataclass(frozen=True)
class NewsletterSubscribed:
    list_name: str


class Customer(Aggregate):
    registry = V3

    def __init__(self, customer_id: Any) -> None:
        super().__init__(customer_id)
        self.name = ""
        self.phone: str | None = None
        self.address = ""
        self.points = Decimal(0)
        self.orders: dict[str, Decimal | None] = {}
        self.newsletters: list[str] = []

    @handles(CustomerRegistered)
    def _registered(self, e: CustomerRegistered) -> None:
        self.name = f"{e.first_name} {e.last_name}"
        self.phone = e.phone

    @handles(AddressChanged)
    def _moved(self, e: AddressChanged) -> None:
        self.address = e.address

    @handles(PointsAwarded)
    def _points(self, e: PointsAwarded) -> None:
        self.points += e.points

    @handles(OrderPlaced)
    def _placed(self, e: OrderPlaced) -> None:
        self.orders[e.order_id] = None

    @handles(OrderPaid)
    def _paid(self, e: OrderPaid) -> None:
        self.orders[e.order_id] = e.amount

    @handles(NewsletterSubscribed)
    def _subscribed(self, e: NewsletterSubscribed) -> None:
        self.newsletters.append(e.list_name)


@pytest.fixture
def v1_store(tmp_path: Path) -> Any:
    # Work on a copy: opening may migrate the file, and the fixture must stay as v1 wrote it.
    copy = tmp_path / "v1.db"
    shutil.copy(FIXTURE, copy)
    with SQLiteEventStore(copy, registry=V3) as store:
        yield store


def test_a_store_written_by_v1_code_loads_through_v3_code(v1_store: Any) -> None:
    with pytest.warns(EskitDeprecationWarning, match="moved to the CRM"):
        customer = Repository(v1_store).get(CUSTOMER, Customer)
    assert customer.name == "Ada Lovelace"
    assert customer.phone == ""
    assert customer.address == "12 St James's Square, London"
    assert customer.points == Decimal("10.5")
    assert type(customer.points) is Decimal
    assert customer.orders == {"order-1": Decimal("25.00")}
    assert customer.newsletters == ["weekly"]
    assert customer.version == 5, "a split event still counts as one stored version"


def test_reads_return_events_in_todays_shape(v1_store: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EskitDeprecationWarning)
        events = v1_store.read_stream(CUSTOMER)
    assert [(e.event_type, e.schema_version) for e in events] == [
        ("legacy.CustomerRegistered", 3),
        ("legacy.AddressChanged", 1),
        ("legacy.PointsAwarded", 2),
        ("legacy.OrderPlaced", 1),  # the split: every reader sees its parts
        ("legacy.OrderPaid", 1),
        ("legacy.NewsletterSubscribed", 1),
    ]
    assert events[0].event_data == {
        "email": "ada@example.org", "first_name": "Ada", "last_name": "Lovelace", "phone": "",
    }
    assert events[0].to_domain(V3) == CustomerRegistered("Ada", "Lovelace", "ada@example.org", "")
    assert [e.metadata.get("written_by") for e in events] == ["v1"] * 6
    assert [e.event_id for e in events if SPLIT_KEY not in e.metadata] == [
        uuid.UUID(int=i) for i in (1, 2, 3, 5)
    ]
    assert [e.version for e in events] == [1, 2, 3, 4, 4, 5]


def test_reading_never_rewrites_stored_data(v1_store: Any) -> None:
    before = sqlite3.connect(FIXTURE).execute(
        "SELECT event_type, schema_version, data FROM eskit_events ORDER BY position"
    ).fetchall()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EskitDeprecationWarning)
        list(v1_store.read_all())
        Repository(v1_store).get(CUSTOMER, Customer)
    after = sqlite3.connect(v1_store.path).execute(
        "SELECT event_type, schema_version, data FROM eskit_events ORDER BY position"
    ).fetchall()
    assert after == before
    assert after[0] == (
        "legacy.CustomerRegistered", 1, '{"name":"Ada Lovelace","email":"ada@example.org"}'
    )


def test_split_parts_carry_the_stored_version_position_and_stable_derived_ids(
    v1_store: Any,
) -> None:
    stored_id = uuid.UUID(int=4)
    first = v1_store.read_stream(CUSTOMER, 3, 4)
    again = list(v1_store.read_all())[3:5]
    assert [e.event_type for e in first] == ["legacy.OrderPlaced", "legacy.OrderPaid"]
    assert first[0].event_id == stored_id
    assert first[1].event_id != stored_id
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert {e.version for e in first} == {4}
    assert len({e.position for e in first}) == 1
    assert [e.metadata[SPLIT_KEY] for e in first] == [
        {"of": str(stored_id), "part": 0, "parts": 2},
        {"of": str(stored_id), "part": 1, "parts": 2},
    ]
    assert V3.expand(first[1]) == [first[1]], "expanding a part again changes nothing"


def test_a_deprecated_type_warns_once_per_process() -> None:
    registry = EventRegistry()
    registry.deprecate("Old", "use New")
    store = InMemoryEventStore(registry=registry)
    store.append("s", [NewEvent("Old"), NewEvent("Old")])
    with pytest.warns(EskitDeprecationWarning, match="use New"):
        store.read_stream("s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.read_stream("s")  # no second warning
        list(store.read_all())


def test_upcasters_apply_on_every_read_path_and_every_store(tmp_path: Path) -> None:
    registry = EventRegistry()

    @registry.upcaster("Priced", from_version=1)
    def to_cents(data: dict[str, Any]) -> dict[str, Any]:
        return {"cents": int(data["euros"] * 100)}

    for store in (InMemoryEventStore(registry=registry),
                  SQLiteEventStore(tmp_path / "e.db", registry=registry)):
        store.append("s", [NewEvent("Priced", {"euros": 2})])
        store.append("s", [NewEvent("Priced", {"cents": 5}, schema_version=2)])
        expected = [{"cents": 200}, {"cents": 5}]
        assert [e.event_data for e in store.read_stream("s")] == expected
        assert [e.event_data for e in store.get_events("s")] == expected
        assert [e.event_data for e in store.read_all()] == expected
        assert [e.schema_version for e in store.read_all()] == [2, 2]
        store.close()


def test_a_failing_upcaster_is_a_decoding_error_naming_the_event() -> None:
    registry = EventRegistry()

    @registry.upcaster("Fragile", from_version=1)
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        return {"x": data["missing"]}

    store = InMemoryEventStore(registry=registry)
    store.append("s-9", [NewEvent("Fragile", {})])
    with pytest.raises(DecodingError, match=r"'Fragile'.*version 1 of stream 's-9'.*KeyError"):
        store.read_stream("s-9")


def test_an_upcaster_must_return_a_dict() -> None:
    registry = EventRegistry()
    registry.upcaster("Odd", from_version=1)(lambda data: ["not", "a", "dict"])  # type: ignore[arg-type,return-value]
    store = InMemoryEventStore(registry=registry)
    store.append("s", [NewEvent("Odd")])
    with pytest.raises(DecodingError, match="not a dict"):
        store.read_stream("s")


def test_rules_that_make_no_sense_are_refused() -> None:
    registry = EventRegistry()
    registry.alias("A", "B")
    with pytest.raises(InvalidInputError, match="cycle"):
        registry.alias("B", "A")
    with pytest.raises(InvalidInputError, match="itself"):
        registry.alias("C", "C")
    with pytest.raises(InvalidInputError, match="already an alias"):
        registry.alias("A", "D")
    registry.upcaster("E", from_version=1)(lambda d: d)
    with pytest.raises(InvalidInputError, match="already has an upcaster"):
        registry.upcaster("E", from_version=1)(lambda d: d)
    with pytest.raises(InvalidInputError):
        registry.upcaster("E", from_version=0)(lambda d: d)


def test_current_version_counts_the_upcasters() -> None:
    assert V3.current_version("legacy.CustomerRegistered") == 3
    assert V3.current_version("legacy.PointsAwarded") == 2
    assert V3.current_version("unknown") == 1


def test_without_rules_reads_return_the_stored_objects_untouched() -> None:
    registry = EventRegistry()
    events = [NewEvent("X")]
    assert registry.upcast(events) is events  # type: ignore[arg-type]


def _order_registry() -> EventRegistry:
    registry = EventRegistry()

    @registry.split("OrderPlacedAndPaid")
    def split(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [("OrderPlaced", {"id": data["id"]}), ("OrderPaid", {"id": data["id"]})]

    return registry


def test_a_split_that_returns_no_parts_is_a_decoding_error() -> None:
    registry = EventRegistry()
    registry.split("Gone")(lambda data: [])
    store = InMemoryEventStore(registry=registry)
    store.append("s", [NewEvent("Gone")])
    with pytest.raises(DecodingError, match="non-empty list"):
        store.read_stream("s")


def test_a_subscription_checkpoint_never_falls_inside_a_split() -> None:
    store = InMemoryEventStore(registry=_order_registry())
    store.append("o-1", [NewEvent("Before"), NewEvent("OrderPlacedAndPaid", {"id": 1})])
    store.append("o-2", [NewEvent("After")])
    subscription = store.subscribe()
    seen = []
    for event in subscription:
        seen.append((event.event_type, subscription.position))
        if event.event_type == "After":
            subscription.stop()
    before, placed, paid, _after = seen
    assert (placed[0], paid[0]) == ("OrderPlaced", "OrderPaid")
    assert placed[1] == before[1], "after the first part the checkpoint stays before the split"
    assert paid[1] > before[1], "after the last part it moves past the whole split"
    # Resuming from the checkpoint taken after the first part repeats it, loses nothing.
    again = [e.event_type for e in store.read_all(placed[1])]
    assert again == ["OrderPlaced", "OrderPaid", "After"]
    # Resuming from the checkpoint taken after the last part goes on after the split.
    assert [e.event_type for e in store.read_all(paid[1])] == ["After"]


def test_an_async_subscription_checkpoint_never_lands_inside_a_split() -> None:
    import asyncio

    from eskit.aio import AsyncInMemoryEventStore

    async def follow() -> list[tuple[str, int]]:
        store = AsyncInMemoryEventStore(registry=_order_registry())
        await store.append("o-1", [NewEvent("Before"), NewEvent("OrderPlacedAndPaid", {"id": 1})])
        await store.append("o-2", [NewEvent("After")])
        subscription = store.subscribe()
        seen = []
        async for event in subscription:
            seen.append((event.event_type, subscription.position))
            if event.event_type == "After":
                subscription.stop()
        return seen

    before, placed, paid, _after = asyncio.run(follow())
    assert (placed[0], paid[0]) == ("OrderPlaced", "OrderPaid")
    assert placed[1] == before[1], "after the first part the checkpoint stays before the split"
    assert paid[1] > before[1], "after the last part it moves past the whole split"


def test_a_projection_written_for_the_new_types_sees_every_split_part() -> None:
    from eskit.projections import InMemoryTarget, Projection, ProjectionRunner

    registry = _order_registry()

    class Orders(Projection):
        name = "split-orders"

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[str, int]] = []

        @handles("OrderPlaced")
        def _placed(self, event: Any, tx: Any) -> None:
            self.seen.append(("placed", event.event_data["id"]))

        @handles("OrderPaid")
        def _paid(self, event: Any, tx: Any) -> None:
            self.seen.append(("paid", event.event_data["id"]))

    store = InMemoryEventStore(registry=registry)
    for i in range(5):
        store.append(f"o-{i}", [NewEvent("OrderPlacedAndPaid", {"id": i})])
    projection = Orders()
    target = InMemoryTarget()
    # Batches of two stored events: every batch boundary falls between splits.
    assert ProjectionRunner(store, projection, target, batch_size=2).run_until_caught_up() == 10
    assert projection.seen == [(kind, i) for i in range(5) for kind in ("placed", "paid")]
    (state,) = target.states("split-orders")
    assert state.position == store.head_position()
    store.append("o-5", [NewEvent("OrderPlacedAndPaid", {"id": 5})])
    again = ProjectionRunner(store, projection, target, batch_size=2)
    assert again.run_until_caught_up() == 2, "resumed after the checkpoint: no part twice"
    assert projection.seen[-2:] == [("placed", 5), ("paid", 5)]


def test_an_aggregate_handler_marked_with_a_type_name_gets_the_domain_event() -> None:
    registry = EventRegistry()

    @domain_event("named.Renamed", registry=registry)
    @dataclass(frozen=True)
    class Renamed:
        name: str

    class Thing(Aggregate):
        def __init__(self, thing_id: Any) -> None:
            super().__init__(thing_id)
            self.name = ""

        @handles("named.Renamed")
        def _renamed(self, event: Renamed) -> None:
            self.name = event.name

    Thing.registry = registry
    store = InMemoryEventStore(registry=registry)
    thing = Thing("t-1")
    thing.raise_event(Renamed("a"))
    assert thing.name == "a"
    Repository(store).save(thing)
    assert Repository(store).get("t-1", Thing).name == "a"
    with pytest.raises(InvalidInputError, match="event classes or non-empty type names"):
        handles("")
