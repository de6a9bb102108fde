"""Without an optional extra, eskit says which one to install, and the rest still works.

Each test runs Python in a subprocess whose import system refuses the extra's
modules (a meta-path finder that raises ModuleNotFoundError for them, as if they
were not installed), so the installed drivers of this environment cannot hide a
missing guard.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = """
import sys

class _NotInstalled:
    blocked = {blocked!r}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def run_without(blocked, code):
    source = BLOCKER.format(blocked=tuple(blocked)) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, cwd=ROOT, timeout=60,
        check=False,
    )


POSTGRES = ("psycopg", "psycopg_pool", "psycopg_binary")


def test_star_import_of_eskit_works_without_the_postgres_extra():
    result = run_without(POSTGRES, """
        from eskit import *
        store = SQLiteEventStore(":memory:")
        store.append("s", [NewEvent("Happened")])
        assert "PostgresEventStore" not in dir()
        import eskit.aio
        from eskit.aio import *
        assert "AsyncPostgresEventStore" not in dir()
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "statement",
    [
        "import eskit; eskit.PostgresEventStore",
        "from eskit import PostgresSnapshotStore",
        "import eskit.stores.postgres",
        "import eskit.stores.postgres_snapshots",
        "import eskit.stores.postgres_schema",
        "from eskit.aio import AsyncPostgresEventStore",
        "import eskit.aio.postgres_snapshots",
    ],
)
def test_postgres_without_its_extra_raises_missing_extra_error_naming_the_extra(statement):
    result = run_without(POSTGRES, f"""
        import eskit
        try:
            {statement}
        except eskit.MissingExtraError as exc:
            assert isinstance(exc, ImportError) and isinstance(exc, eskit.EskitError)
            assert exc.extra == "postgres" and exc.name == "psycopg", (exc.extra, exc.name)
            print(exc)
        else:
            raise SystemExit("no error")
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install 'eskit[postgres]'" in result.stdout


def test_metrics_without_its_extra_names_the_metrics_extra():
    result = run_without(("prometheus_client",), """
        import eskit
        try:
            import eskit.projections.metrics
        except eskit.MissingExtraError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install 'eskit[metrics]'" in result.stdout


def test_make_app_without_the_cli_extra_names_the_cli_extra():
    result = run_without(("typer",), """
        import eskit
        from eskit.cli import make_app
        try:
            make_app()
        except eskit.MissingExtraError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install 'eskit[cli]'" in result.stdout


def test_the_cli_on_a_dsn_without_the_postgres_extra_exits_1_with_the_hint():
    result = run_without(POSTGRES, """
        import sys
        sys.argv = ["eskit", "streams", "postgresql://u:secret-pw@127.0.0.1:1/db"]
        from eskit.cli import main
        main()
    """)
    assert result.returncode == 1, result.stderr
    assert "pip install 'eskit[postgres]'" in result.stderr
    assert "secret-pw" not in result.stderr
    assert "Traceback" not in result.stderr


def test_fastapi_support_without_its_extra_names_the_fastapi_extra():
    result = run_without(("fastapi",), """
        import eskit
        eskit.open_store("memory://")  # the rest of eskit works without it
        try:
            import eskit.fastapi
        except eskit.MissingExtraError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install 'eskit[fastapi]'" in result.stdout


def test_the_explorer_without_jinja2_names_the_web_extra():
    result = run_without(("jinja2",), """
        import eskit
        try:
            import eskit.web.explorer
        except eskit.MissingExtraError as exc:
            assert exc.extra == "web" and exc.name == "jinja2", (exc.extra, exc.name)
            print(exc)
        else:
            raise SystemExit("no error")
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install 'eskit[web]'" in result.stdout
