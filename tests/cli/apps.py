"""An aggregate class for ``eskit state/diff --app``, over the events of ``timeline_db``."""

from __future__ import annotations

from decimal import Decimal

from eskit import Aggregate


class Order(Aggregate):
    def __init__(self, order_id):
        super().__init__(order_id)
        self.customer = None
        self.lines = []
        self.status = None
        self.total = Decimal(0)

    def handle_OrderPlaced(self, data):
        self.customer = data["customer"]
        self.status = "new"
        self.total = data["total"]

    def handle_LineAdded(self, data):
        self.lines.append(data["sku"])
        self.total = data["total"]

    def handle_OrderPaid(self, data):
        self.status = "paid"


NotAnAggregate = object
