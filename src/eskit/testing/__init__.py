"""Test support for eskit users and backend authors (needs pytest).

:class:`EventStoreContract` is the shared contract suite every event store
passes; subclass it to run it against your own backend.
"""

from eskit.testing.contract import EventStoreContract

__all__ = ["EventStoreContract"]
