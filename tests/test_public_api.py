"""The public API changes only on purpose: this list pins it."""

import subprocess
import sys

import eskit

PUBLIC_API = [
    "ANY", "NO_STREAM", "STREAM_EXISTS", "Aggregate", "AggregateNotFound",
    "AppendNotFirstWriteError", "AppendResult",
    "ConcurrencyError", "DamagedStoreError", "DecodingError", "DuplicateEventError",
    "EncodingError",
    "EskitDeprecationWarning", "EskitError",
    "Event", "EventOrderError", "EventRegistry", "EventStore", "ExpectedVersion",
    "InMemoryEventStore", "InvalidInputError", "NewEvent", "NotAnEskitStoreError",
    "PostgresEventStore", "Repository",
    "SQLiteEventStore", "StoreBusyError", "StoreError", "StoreUnavailableError", "StreamId",
    "StreamInfo", "Subscription",
    "UnknownEventTypeError", "__version__", "domain_event", "handles", "register_type",
    "upcaster", "utc_now",
    # the event bus (eskit.bus)
    "BrokerUnavailableError", "BusError", "InvalidMessageError", "PublishRejectedError",
    # snapshots and time travel
    "EveryNEvents", "InMemorySnapshotStore", "NoSnapshots", "OnDemand", "PostgresSnapshotStore",
    "SQLiteSnapshotStore", "Snapshot", "SnapshotPolicy", "SnapshotStore", "VersionNotFound",
    "snapshot_upcaster",
    # the read side (eskit.projections)
    "EventFilter", "InMemoryTarget", "PostgresTarget", "Projection", "ProjectionFailed",
    "ProjectionRunner", "RetryPolicy", "SQLiteTarget", "ParkedEventBlocked",
    "UnknownHandlerWarning", "wait_for_projection",
    # reading past an event that cannot be decoded
    "UndecodableEvent",
    # optional extras
    "MissingExtraError",
    # several streams in one append (EventStore.append_many)
    "MultiStreamConcurrencyError", "StreamAppend",
    # time travel across versions (eskit.timetravel)
    "FieldChange", "StateDiff", "state_diff",
    # readiness probes (eskit.health)
    "HealthReport", "check_health",
    # opening the store a URL or $ESKIT_DSN names (eskit.config)
    "open_store",
    # dynamic consistency boundaries (eskit.dcb)
    "AppendCondition", "AppendConditionFailed", "Query", "QueryItem", "ReadResult",
    # stream deletion (EventStore.delete_stream)
    "StreamArchivedError",
    "StreamDeletedError",
    # per-stream truncation (EventStore.truncate_stream)
    "StreamTruncatedError",
    "TruncationRefusedError",
    # storage growth: sizes and snapshot pruning (eskit.maintenance)
    "StoreStats", "prune_snapshots", "stats",
    # payload compression (eskit.stores.compact)
    "CompactResult", "compact",
    # deciders, command handlers and bounded retries (eskit.decider, eskit.retry)
    "CommandHandler", "CommandResult", "CommandRetriesExhausted", "Decider", "FunctionDecider",
    "Retry", "decider", "fold", "retry",
    # who did what (eskit.context)
    "caused_by", "event_context",
    # large payloads by reference (eskit.blobs)
    "BlobCollectionRefusedError", "BlobNotFoundError", "BlobRef",
]


def test_public_api_is_exactly_the_pinned_list() -> None:
    assert sorted(eskit.__all__) == sorted(PUBLIC_API)
    for name in eskit.__all__:
        assert hasattr(eskit, name), name


def test_every_error_is_an_eskit_error() -> None:
    for name in eskit.__all__:
        obj = getattr(eskit, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, eskit.EskitError), name


def test_concurrency_error_is_a_value_error_for_seed_code() -> None:
    assert issubclass(eskit.ConcurrencyError, ValueError)


def test_importing_eskit_needs_no_optional_dependency() -> None:
    code = (
        "import sys, eskit, eskit.aio; bad = [m for m in ('typer', 'rich', 'psycopg', 'pytest', "
        "'fastapi', 'pydantic', 'starlette') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_eskit_logger_has_a_null_handler_so_an_unconfigured_app_prints_nothing() -> None:
    import logging

    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("eskit").handlers)
    code = "import logging, eskit; logging.getLogger('eskit.snapshots').warning('snapshot failed')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stderr == ""  # no last-resort handler output


def test_eskit_log_records_still_reach_the_applications_handlers() -> None:
    code = (
        "import logging, eskit; logging.basicConfig(format='%(name)s %(message)s'); "
        "logging.getLogger('eskit.snapshots').warning('snapshot failed')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stderr.strip() == "eskit.snapshots snapshot failed"


def test_the_version_is_written_in_one_place_and_the_package_metadata_reads_it() -> None:
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "src/eskit/__init__.py"
    assert version("eskit") == eskit.__version__
