"""The installed wheel works on its own: run by .ci/wheel-smoke, never by the main suite.

.ci/wheel-smoke installs the built wheel (with the ``cli`` and ``postgres`` extras)
into a fresh virtualenv outside the source tree and runs this file from a temporary
directory with ``--import-mode=importlib``, so nothing of the checkout is importable.
The main suite does not collect this directory (``norecursedirs`` in pyproject.toml):
there eskit is the editable install and these tests would prove nothing.

Environment: ``ESKIT_EXPECTED_VERSION`` (the version in the wheel's file name),
``ESKIT_SOURCE_TREE`` (the checkout, which must not be on ``sys.path``) and
``ESKIT_TEST_POSTGRES_DSN``. Each is required: a missing one fails, never skips.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import os
import re
import subprocess
import sys
import types
import uuid
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

import eskit


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run this suite through .ci/wheel-smoke")
    return value


def _eskit_command() -> Path:
    # The console script of this virtualenv, not whichever `eskit` is first on PATH.
    return Path(sys.executable).parent / "eskit"


def test_eskit_is_the_installed_wheel_not_the_checkout():
    source = Path(_env("ESKIT_SOURCE_TREE")).resolve()
    module = Path(eskit.__file__).resolve()
    assert not module.is_relative_to(source), module
    assert module.is_relative_to(Path(sys.prefix).resolve()), (module, sys.prefix)
    on_path = [p for p in sys.path if p and Path(p).resolve().is_relative_to(source)]
    assert on_path == [], on_path


def test_version_is_single_sourced_into_the_wheel():
    expected = _env("ESKIT_EXPECTED_VERSION")
    assert eskit.__version__ == expected
    assert importlib.metadata.version("eskit") == expected


def test_py_typed_is_shipped():
    assert (importlib.resources.files("eskit") / "py.typed").is_file()


@pytest.mark.parametrize("name", [
    "templates/base.html", "templates/streams.html", "templates/event.html",
    "static/explorer.css", "static/explorer.js",
])
def test_the_explorers_templates_and_static_files_are_shipped(name):
    # Not .py files: the wheel must carry them for the explorer to render anything.
    explorer = importlib.resources.files("eskit") / "web" / "explorer"
    assert explorer.joinpath(*name.split("/")).is_file(), name


@pytest.mark.parametrize("name", ["examples", "tests", "benchmarks"])
def test_the_checkouts_top_level_packages_are_not_installed(name):
    assert importlib.util.find_spec(name) is None, importlib.util.find_spec(name)
    with pytest.raises(ModuleNotFoundError):
        __import__(name)


def test_wheel_ships_only_the_eskit_package():
    files = importlib.metadata.files("eskit") or []
    top = {f.parts[0] for f in files if not f.parts[0].endswith((".dist-info", ".data"))}
    top.discard("..")  # the console script, installed in bin/
    assert top == {"eskit"}, top
    demo = {f.name for f in files if f.parts[:2] == ("eskit", "_demo_bank")}
    assert {"__init__.py", "demo.py", "domain.py", "read_models.py"} <= demo, demo


def test_no_published_extra_pulls_test_tools_or_the_benchmark_peer():
    requires = importlib.metadata.requires("eskit") or []
    extras = importlib.metadata.metadata("eskit").get_all("Provides-Extra") or []
    assert "dev" not in extras, extras
    for banned in ("eventsourcing", "pytest", "hypothesis", "mypy", "ruff"):
        assert not [r for r in requires if r.startswith(banned)], (banned, requires)


def test_the_readme_quick_start_from_the_package_metadata_runs(tmp_path, monkeypatch):
    # The long description is the README as the package index shows it.
    readme = importlib.metadata.metadata("eskit").get_payload()
    assert isinstance(readme, str)
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    # A real module: dataclasses look their class's module up in sys.modules.
    module = types.ModuleType("readme_quick_start")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(blocks[0], "README.md", "exec"), module.__dict__)
    assert hasattr(module, "carts")  # the block ran to its end (its asserts included)


def test_readme_links_are_absolute():
    readme = importlib.metadata.metadata("eskit").get_payload()
    assert isinstance(readme, str)
    targets = re.findall(r"\]\(([^)]+)\)", readme)
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert relative == [], relative


def test_postgres_append_and_read_with_the_postgres_extra():
    import psycopg

    dsn = _env("ESKIT_TEST_POSTGRES_DSN")
    schema = "eskit_test_smoke_" + uuid.uuid4().hex[:12]
    stream = f"smoke-{uuid.uuid4()}"
    try:
        store = eskit.PostgresEventStore(dsn, schema=schema)
        try:
            first = [
                eskit.NewEvent("smoke.Deposited", {"amount": Decimal("10.05")}),
                eskit.NewEvent("smoke.Withdrawn", {"amount": Decimal("0.05")}),
            ]
            store.append(stream, first, expected_version=eskit.NO_STREAM)
            with pytest.raises(eskit.ConcurrencyError):
                store.append(stream, [eskit.NewEvent("smoke.Late")], expected_version=0)
            events = store.read_stream(stream)
            assert [(e.event_type, e.version) for e in events] == [
                ("smoke.Deposited", 1), ("smoke.Withdrawn", 2),
            ]
            assert events[0].event_data["amount"] == Decimal("10.05")
            assert [e.event_id for e in events] == [e.event_id for e in first]
        finally:
            store.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ESKIT_DSN")}
    return subprocess.run(
        [str(_eskit_command()), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )


def test_eskit_help_lists_the_commands(tmp_path):
    result = _run("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("demo", "events", "relay", "health"):
        assert command in result.stdout, result.stdout


def test_eskit_demo_runs_outside_a_checkout(tmp_path):
    # The wheel ships the bank example as eskit._demo_bank; examples/ stays out.
    result = _run("demo", cwd=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    with eskit.SQLiteEventStore(str(tmp_path / "eskit-demo.db"), create=False) as store:
        assert store.head_position() == 12  # the demo's twelve events, as in the checkout
    again = _run("demo", cwd=tmp_path)  # replaces the file it wrote itself
    assert again.returncode == 0, again.stderr


def test_sqlite_append_snapshots_and_stats_raise_no_deprecation_warning(tmp_path):
    # Python 3.12 deprecates numbered SQL parameters (?1) bound from a sequence, and 3.14
    # refuses them: the SQLite paths that used them, run with warnings as errors.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        store = eskit.SQLiteEventStore(str(tmp_path / "smoke.db"))
        try:
            snapshots = eskit.SQLiteSnapshotStore(store)
            stream = f"smoke-{uuid.uuid4()}"
            store.append(stream, [eskit.NewEvent("smoke.A"), eskit.NewEvent("smoke.B")])
            for event in store.read_stream(stream):
                snapshots.save(eskit.Snapshot(
                    stream, "smoke.Aggregate", event.version, event.event_id, 1, b"{}",
                    datetime.now(UTC),
                ))
            assert snapshots.prune(keep=1) == 1
            assert eskit.stats(store).events == 2
        finally:
            store.close()


def test_the_classifiers_declare_this_python():
    # .ci/wheel-smoke runs this on every Python the classifiers name, and checks that
    # they name exactly those it runs on.
    classifiers = importlib.metadata.metadata("eskit").get_all("Classifier") or []
    here = f"Programming Language :: Python :: {sys.version_info[0]}.{sys.version_info[1]}"
    assert here in classifiers, classifiers
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")], classifiers
