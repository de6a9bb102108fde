"""The bus contract suites against the in-process broker (memory://)."""

from __future__ import annotations

from eskit.testing.bus_contract import BusContract, RelayConsumerContract
from tests.bus.conftest import unique_name


class TestMemoryBus(BusContract):
    def make_url(self) -> str:
        return f"memory://{unique_name('bus')}"


class TestMemoryRelayConsumer(RelayConsumerContract):
    def make_url(self) -> str:
        return f"memory://{unique_name('e2e')}"
