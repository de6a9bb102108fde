"""Looking after a store as it grows: its size (:mod:`~eskit.maintenance.stats`) and
snapshot pruning (:mod:`~eskit.maintenance.pruning`)."""

from eskit.maintenance.pruning import (
    prune_snapshots,
    prune_snapshots_async,
    snapshot_store_beside,
    snapshot_store_beside_async,
)
from eskit.maintenance.stats import (
    DEFAULT_TOP,
    CategorySize,
    StoreStats,
    StreamSize,
    stats,
    stats_async,
)

__all__ = [
    "DEFAULT_TOP",
    "CategorySize",
    "StoreStats",
    "StreamSize",
    "prune_snapshots",
    "prune_snapshots_async",
    "snapshot_store_beside",
    "snapshot_store_beside_async",
    "stats",
    "stats_async",
]
