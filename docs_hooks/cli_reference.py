"""MkDocs hook: the CLI reference page, rendered from the typer command definitions.

At build time this walks the ``eskit`` typer application (``eskit.cli._app.make_app``)
and writes every command's ``--help`` into ``reference/cli.md``, so the page cannot
drift from the code: nothing is hand-copied. The help is click's plain-text rendering
(not rich's boxes), the same words a user sees in a terminal.

It lives outside ``src/`` so it is neither in the wheel nor importable from an
installed eskit; mkdocs loads it by path (``hooks:`` in mkdocs.yml).
"""

from __future__ import annotations

from typing import Any

import typer
from mkdocs.structure.files import File, Files

PAGE = "reference/cli.md"

INTRO = """\
# CLI reference

Every `eskit` command and its `--help`, generated from the command definitions when
the site is built. The guide, with worked examples and the exit codes, is
[The `eskit` command line](../cli.md).
"""


def _plain_help(command: Any, ctx: Any) -> str:
    # Typer renders help with rich (boxes, colour) unless a command's markup mode is
    # None; then it is the plain click text, which reads well in a code block.
    command.rich_markup_mode = None
    return str(command.get_help(ctx)).rstrip()


def _walk(command: Any, path: list[str], parent: Any) -> list[tuple[list[str], str]]:
    # Typer vendors its own click: build contexts from the command's own class.
    ctx = command.context_class(
        command, info_name=path[-1], parent=parent, terminal_width=88, max_content_width=88
    )
    found = [(path, _plain_help(command, ctx))]
    for name in getattr(command, "list_commands", lambda _ctx: [])(ctx):
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            found.extend(_walk(sub, [*path, name], ctx))
    return found


def render() -> str:
    """The markdown of the CLI reference page."""
    from eskit.cli._app import make_app

    root = typer.main.get_command(make_app())
    parts = [INTRO]
    for path, text in _walk(root, ["eskit"], None):
        level = "#" * min(len(path) + 1, 4)
        parts.append(f"{level} `{' '.join(path)}`\n\n```text\n{text}\n```\n")
    return "\n".join(parts)


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, PAGE, content=render()))
    return files
