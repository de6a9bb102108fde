"""The async projection runner's batch span links to the appends of its events."""

from __future__ import annotations

import asyncio

from eskit import NewEvent
from eskit.aio import AsyncInMemoryEventStore, AsyncProjectionRunner
from eskit.projections import InMemoryTarget, Projection

from .conftest import Otel


class Totals(Projection):
    name = "totals"

    def handle_Placed(self, event: object, tx: object) -> None:
        pass


def test_async_batch_links_to_the_requests_that_appended_its_events(otel: Otel) -> None:
    async def main() -> None:
        store = AsyncInMemoryEventStore()
        with otel.tracer.start_as_current_span("POST /orders"):
            await store.append("order-1", [NewEvent("Placed", {})])
        with otel.tracer.start_as_current_span("POST /orders"):
            await store.append("order-2", [NewEvent("Placed", {})])
        runner = AsyncProjectionRunner(store, Totals(), InMemoryTarget())
        assert await runner.run_until_caught_up() == 2

    asyncio.run(main())
    batch = otel.spans("projection totals")[0]
    appends = otel.spans("append events")
    assert len(appends) == 2
    assert [link.context.span_id for link in batch.links] == [
        a.context.span_id for a in appends
    ]
