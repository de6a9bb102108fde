"""Shared fixtures: the real PostgreSQL server the tests talk to."""

import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_DSN = os.environ.get(
    "ESKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
TEST_SCHEMA_PREFIX = "eskit_test_"


def _postgres_available() -> str | None:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_DSN} is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The DSN of a reachable server. In CI a missing server fails the tests, never skips."""
    problem = _postgres_available()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    yield POSTGRES_DSN
    import psycopg

    # Drop only this session's schemas: other test sessions may share the server.
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        for schema in _created_schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


_created_schemas: list[str] = []


def new_schema_name() -> str:
    """A fresh schema name for one store; dropped when the test session ends."""
    name = TEST_SCHEMA_PREFIX + uuid.uuid4().hex[:12]
    _created_schemas.append(name)
    return name
