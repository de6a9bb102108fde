"""Handler typos on projections are reported when the projection is created."""

import warnings
from dataclasses import dataclass

import pytest

from eskit import EventRegistry, domain_event, handles
from eskit.errors import InvalidInputError
from eskit.projections import Projection, UnknownHandlerWarning
from eskit.projections.process_manager import ProcessManager

shop = EventRegistry()


@domain_event("OrderPlaced", registry=shop)
@dataclass(frozen=True)
class OrderPlaced:
    order: str


@domain_event("shop.OrderShipped", registry=shop)
@dataclass(frozen=True)
class OrderShipped:
    order: str


shop.alias("OrderSent", "shop.OrderShipped")


def test_a_misspelt_handler_method_is_reported_with_the_nearest_registered_types() -> None:
    class Orders(Projection):
        name = "orders"
        registry = shop

        def handle_OrderPlace(self, event, tx) -> None: ...

    with pytest.warns(UnknownHandlerWarning) as caught:
        Orders()
    (warning,) = caught
    text = str(warning.message)
    assert "Orders.handle_OrderPlace handles 'OrderPlace'" in text
    assert "did you mean 'OrderPlaced'" in text


def test_a_handles_decorator_on_an_unknown_type_name_is_reported() -> None:
    class Orders(Projection):
        name = "orders"
        registry = shop

        @handles("shop.OrderShiped")
        def _shipped(self, event, tx) -> None: ...

    with pytest.warns(UnknownHandlerWarning, match=r"Orders\._shipped .*'shop\.OrderShipped'"):
        Orders()


def test_a_handler_for_an_aliased_old_name_is_reported_as_never_running() -> None:
    class Orders(Projection):
        name = "orders"
        registry = shop

        def handle_OrderSent(self, event, tx) -> None: ...

    with pytest.warns(UnknownHandlerWarning, match="read as 'shop.OrderShipped'"):
        Orders()


def test_a_handles_decorator_on_an_unregistered_class_is_an_error() -> None:
    @dataclass(frozen=True)
    class Loose:
        n: int

    class Orders(Projection):
        name = "orders"
        registry = shop

        @handles(Loose)
        def _loose(self, event, tx) -> None: ...

    with pytest.raises(InvalidInputError, match=r"Orders\._loose handles"):
        Orders()


def test_registered_handlers_and_plain_event_types_are_not_reported() -> None:
    class Orders(Projection):
        name = "orders"
        registry = shop

        def handle_OrderPlaced(self, event, tx) -> None: ...

        @handles(OrderShipped)
        def _shipped(self, event, tx) -> None: ...

        def handle_CustomerJoined(self, event, tx) -> None: ...   # plain, far from any

    class Classic(Projection):
        name = "classic"
        registry = EventRegistry()  # the classic tutorial: plain types, nothing registered

        def handle_AccountOpened(self, event, tx) -> None: ...

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Orders().event_types == {"OrderPlaced", "shop.OrderShipped", "CustomerJoined"}
        assert Classic().event_types == {"AccountOpened"}


def test_a_process_manager_handler_typo_is_reported_too() -> None:
    class Shipping(ProcessManager):
        name = "shipping"
        registry = shop

        def handle_OrderPlacd(self, event, tx) -> None: ...

    with pytest.warns(UnknownHandlerWarning, match="did you mean 'OrderPlaced'"):
        Shipping(store=None)
