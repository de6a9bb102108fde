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
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        _vacuum_catalogs(conn)  # what earlier sessions left (a few seconds)
    yield POSTGRES_DSN

    # Drop only this session's schemas: other test sessions may share the server.
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        for schema in _created_schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        _vacuum_catalogs(conn)


# The catalogs a session's thousands of schemas (tables, indexes, triggers,
# functions) were written into and deleted from. With autovacuum off (this
# machine's CI configuration) their dead rows stay: after a few sessions
# pg_attribute held 1.37 million dead rows beside 110,000 live ones and every
# CREATE and lookup slowed, the suite by minutes. VACUUM needs the owner (the
# tests connect as the superuser here); without the right it is skipped.
_CATALOGS = ("pg_attribute", "pg_class", "pg_type", "pg_depend", "pg_index",
             "pg_constraint", "pg_trigger", "pg_proc", "pg_attrdef", "pg_namespace",
             "pg_sequence", "pg_inherits", "pg_statistic")


def _vacuum_catalogs(conn) -> None:
    import psycopg

    for table in _CATALOGS:
        try:
            conn.execute(f"VACUUM pg_catalog.{table}")
        except psycopg.errors.InsufficientPrivilege:
            return


_created_schemas: list[str] = []


def new_schema_name() -> str:
    """A fresh schema name for one store; dropped when the test session ends."""
    name = TEST_SCHEMA_PREFIX + uuid.uuid4().hex[:12]
    _created_schemas.append(name)
    return name
