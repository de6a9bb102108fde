"""The protected store is an event store: it passes the whole store contract itself.

Run over the in-memory store only: the protection layer is the same code over every
backend, whose own behaviour it delegates (the SQLite and PostgreSQL stores pass the
contract in tests/stores; their protected forms pass the protection contract).
"""

from pathlib import Path

from eskit import EventStore, InMemoryEventStore
from eskit.protection import LocalKeyProvider, protect
from eskit.testing import EventStoreContract

KEYS = LocalKeyProvider({"m": b"m" * 32})


class TestProtectedInMemoryEventStore(EventStoreContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return protect(InMemoryEventStore(), KEYS)
