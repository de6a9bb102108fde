import pytest

from tests.conftest import new_schema_name
from tests.projections.helpers import postgres_backend, sqlite_backend


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        with sqlite_backend(tmp_path) as b:
            yield b
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        with postgres_backend(dsn, new_schema_name()) as b:
            yield b
