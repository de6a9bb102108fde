"""``eskit erase-subject``, ``eskit export-subject`` and ``eskit rewrap-keys`` (eskit.protection).

The master keys come from ``--key-file`` or the environment variable named by
``--keys-env`` (default ``ESKIT_MASTER_KEYS``), never from the command line.
"""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from eskit.cli import _common as c

__all__ = ["register"]

_KEYS_ENV = "ESKIT_MASTER_KEYS"

key_file_option = typer.Option(
    "--key-file", metavar="PATH", help="A file of master keys (id:base64 per line, first current)."
)
keys_env_option = typer.Option(
    "--keys-env", metavar="NAME", help="The environment variable holding the master keys."
)
import_option = typer.Option(
    "--import", metavar="MODULE",
    help="Import a module first (it registers the domain event classes). Repeatable.",
)


def register(app: typer.Typer) -> None:
    """Add the data-protection commands to the eskit CLI."""
    app.command("erase-subject", cls=c.StoreCommand)(erase_subject)
    app.command("export-subject", cls=c.StoreCommand)(export_subject)
    app.command("rewrap-keys", cls=c.StoreCommand)(rewrap_keys)


@contextmanager
def _protected(db: str, schema: str, key_file: Path | None, keys_env: str,
               imports: list[str] | None) -> Iterator[Any]:
    try:
        from eskit.protection import LocalKeyProvider, protect
    except ImportError as exc:
        raise c.BadInput(str(exc)) from None
    for module in imports or ():
        c.import_module(module)
    provider = (LocalKeyProvider.from_file(key_file) if key_file is not None
                else LocalKeyProvider.from_env(keys_env))
    with c.open_store(db, schema) as store:
        protected = protect(store, provider)
        try:
            yield protected
        finally:
            protected.keys.close()  # the store itself is closed by open_store


def erase_subject(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    subject: Annotated[str, typer.Argument(help="The data subject's id.", show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
    key_file: Annotated[Path | None, key_file_option] = None,
    keys_env: Annotated[str, keys_env_option] = _KEYS_ENV,
    imports: Annotated[list[str] | None, import_option] = None,
    vacuum: Annotated[bool, typer.Option(
        "--vacuum/--no-vacuum",
        help="Rebuild the database file (SQLite VACUUM, PostgreSQL VACUUM FULL of the key "
             "table) so deleted bytes are gone from it too.",
    )] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")]
    = False,
) -> None:
    """Crypto-shred SUBJECT: delete their key, so every field sealed for them reads as erased.

    Irreversible. Also deletes the snapshots of the streams involved and records a
    SubjectErased event in $subject-erasures for projections to purge their read models.
    """
    with c.reported_errors(), _protected(db, schema, key_file, keys_env, imports) as store:
        erasure = store.erase_subject(subject, vacuum=vacuum)
    if as_json:
        c.print_json({
            "subject": erasure.subject, "keys_deleted": erasure.keys_deleted,
            "streams": list(erasure.streams), "snapshots_deleted": erasure.snapshots_deleted,
            "position": erasure.position, "purge_complete": erasure.purge.complete,
            "purge_steps": list(erasure.purge.steps), "notes": list(erasure.notes),
        })
        return
    out = c.console()
    out.print(c.plain(
        f"erased subject {erasure.subject!r}: {erasure.keys_deleted} key deleted, "
        f"{len(erasure.streams)} stream(s) now read redacted, "
        f"{erasure.snapshots_deleted} snapshot(s) deleted"
    ))
    for step in (*erasure.purge.steps, *erasure.notes):
        out.print(c.plain(f"  {step}"))
    if not erasure.purge.complete:
        c.console(stderr=True).print("maintenance incomplete: run the command again later")
        raise typer.Exit(1)


def export_subject(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    subject: Annotated[str, typer.Argument(help="The data subject's id.", show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
    key_file: Annotated[Path | None, key_file_option] = None,
    keys_env: Annotated[str, keys_env_option] = _KEYS_ENV,
    imports: Annotated[list[str] | None, import_option] = None,
) -> None:
    """Every event carrying SUBJECT's data, decrypted, as JSON lines in global order.

    One JSON object a line: position, stream_id, version, event_id, event_type,
    timestamp, schema_version, data, metadata (a subject-access request's answer).
    """
    with c.reported_errors(), _protected(db, schema, key_file, keys_env, imports) as store:
        write = sys.stdout.buffer.write
        for event in store.export_subject(subject):
            write(_line({
                "position": event.position, "stream_id": str(event.aggregate_id),
                "version": event.version, "event_id": str(event.event_id),
                "event_type": event.event_type, "timestamp": event.timestamp.isoformat(),
                "schema_version": event.schema_version, "data": event.event_data,
                "metadata": event.metadata,
            }))
        sys.stdout.flush()


def rewrap_keys(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
    key_file: Annotated[Path | None, key_file_option] = None,
    keys_env: Annotated[str, keys_env_option] = _KEYS_ENV,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, max=100_000, metavar="KEYS", help="Keys per transaction.",
    )] = 500,
) -> None:
    """Re-wrap every subject key under the current (first) master key; no event is rewritten.

    Safe to interrupt and run again. Afterwards the older master keys hold nothing.
    """
    with c.reported_errors(), _protected(db, schema, key_file, keys_env, None) as store:
        done = store.rewrap(batch_size=batch_size)
        current = store.provider.current_key_id()
    c.console().print(c.plain(f"re-wrapped {done:,} key(s) under master key {current!r}"))


def _line(document: dict[str, Any]) -> bytes:
    # One object a line; integers wider than 64 bits (PostgreSQL positions) as text.
    try:
        return orjson.dumps(document, default=_default, option=_LINE) + b"\n"
    except orjson.JSONEncodeError:
        document = {**document, "position": str(document["position"])}
        return orjson.dumps(document, default=_default, option=_LINE) + b"\n"


_LINE = orjson.OPT_NON_STR_KEYS


def _default(item: Any) -> Any:
    from decimal import Decimal

    if isinstance(item, Decimal):
        return str(item)
    if isinstance(item, set | frozenset):
        return list(item)
    if isinstance(item, bytes):
        return item.hex()
    return str(item)
