"""Projection targets, one module per kind of database.

What every target guarantees is in :mod:`eskit.projections.checkpoints`.
"""

from __future__ import annotations

from pathlib import Path

from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.targets.memory import InMemoryTarget
from eskit.projections.targets.postgres import PostgresTarget
from eskit.projections.targets.sqlite import SQLiteTarget

__all__ = ["InMemoryTarget", "PostgresTarget", "SQLiteTarget", "target_for"]


def target_for(db: str | Path, *, schema: str = "eskit") -> ProjectionTarget:
    """A target for a SQLite path or a ``postgresql://`` URL (used by the CLI)."""
    text = str(db)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresTarget(text, schema=schema)
    return SQLiteTarget(text)
