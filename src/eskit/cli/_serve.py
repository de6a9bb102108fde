"""``eskit serve``: the HTTP API (and the explorer) over a store, with uvicorn."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

import ipaddress
from typing import Annotated

import typer

from eskit.cli import _common as c

__all__ = ["register"]

LOOPBACK = "127.0.0.1"


def register(app: typer.Typer) -> None:
    app.command(name="serve", cls=c.StoreCommand)(serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _aggregates(spec: str) -> list[type]:
    """The Aggregate classes ``spec`` names: ``MODULE:CLASS``, or every one ``MODULE`` defines."""
    from eskit import Aggregate

    if ":" in spec:
        return [c.import_object(spec, "an Aggregate class",
                                lambda o: isinstance(o, type) and issubclass(o, Aggregate))]
    module = c.import_module(spec)
    found = [o for o in vars(module).values()
             if isinstance(o, type) and issubclass(o, Aggregate) and o is not Aggregate
             and o.__module__ == module.__name__]
    if not found:
        raise c.BadInput(f"--app {spec!r}: the module defines no Aggregate class")
    return found


def serve(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
    host: Annotated[str, typer.Option(
        "--host", help="The address to listen on. Only this machine can connect unless "
        "you name another (0.0.0.0: every interface).")] = LOOPBACK,
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    read_tokens: Annotated[list[str] | None, typer.Option(
        "--read-token", envvar="ESKIT_READ_TOKEN", metavar="TOKEN",
        help="A token that may read; repeat for more. When any is set, reads need one. "
        "$ESKIT_READ_TOKEN keeps it off the command line.")] = None,
    write_tokens: Annotated[list[str] | None, typer.Option(
        "--write-token", envvar="ESKIT_WRITE_TOKEN", metavar="TOKEN",
        help="A token that may append (and read). Without one the API is read-only. "
        "$ESKIT_WRITE_TOKEN keeps it off the command line.")] = None,
    read_only: Annotated[bool, typer.Option(
        "--read-only", help="Refuse every write, whatever the tokens.")] = False,
    apps: Annotated[list[str] | None, typer.Option(
        "--app", metavar="MODULE[:CLASS]",
        help="Aggregate classes for the explorer's state and diff pages: a module (every "
        "Aggregate class defined in it) or MODULE:CLASS; repeat for more.")] = None,
    max_request_bytes: Annotated[int | None, typer.Option(
        "--max-request-bytes", min=1, metavar="N",
        help="The largest request body accepted (default 1 MiB).")] = None,
) -> None:
    """Serve the store over HTTP: the JSON API under /api (OpenAPI page at /api/docs).

    Listens on 127.0.0.1 unless --host says otherwise, and is read-only unless a
    write token is configured. Ctrl-C stops it, ending open event streams.
    """
    with c.reported_errors():
        from eskit.web import DEFAULT_MAX_REQUEST_BYTES, WebSettings, create_app
        from eskit.web.server import Server

        settings = WebSettings(
            read_tokens=tuple(read_tokens or ()), write_tokens=tuple(write_tokens or ()),
            read_only=read_only,
            max_request_bytes=max_request_bytes or DEFAULT_MAX_REQUEST_BYTES,
        )
        aggregates = [cls for spec in apps or () for cls in _aggregates(spec)]
        with c.open_store(db, schema) as store:
            app = create_app(store, settings=settings, aggregates=aggregates)
            out = c.console(stderr=True)
            shown = f"[{host}]" if ":" in host else host
            explorer = ""
            if getattr(app.state, "eskit_explorer", False):
                signin = " (sign in with a token)" if settings.reads_need_token else ""
                explorer = f"the explorer on http://{shown}:{port}/{signin}; "
            out.print(f"eskit serve: {c.escape(c.redact(db))}: {explorer}"
                      f"the API on http://{shown}:{port}/api (OpenAPI page /api/docs); "
                      f"{'writes need a write token' if settings.writable else 'read-only'}; "
                      f"{'reads need a token' if settings.reads_need_token else 'reads open'}",
                      highlight=False, soft_wrap=True)
            if not _is_loopback(host) and not settings.reads_need_token:
                out.print("[yellow]warning:[/] listening beyond this machine with no read "
                          "token: anyone who reaches it can read every event",
                          highlight=False, soft_wrap=True)
            Server(app, host=host, port=port).run()
