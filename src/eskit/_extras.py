"""Which optional extras are installed, asked without importing them."""

from __future__ import annotations

import importlib.util

__all__ = ["POSTGRES_MODULES", "installed"]

POSTGRES_MODULES = ("psycopg", "psycopg_pool")
"""What the ``postgres`` extra installs (``pip install 'eskit[postgres]'``)."""


def installed(*modules: str) -> bool:
    """Whether every one of ``modules`` can be found (none is imported)."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):  # blocked, or sys.modules[name] is None
            return False
    return True
