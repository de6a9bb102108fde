"""The exit codes of the ``eskit`` command and the environment variable it reads.

Kept apart from the commands so that ``eskit.cli`` can name them without
importing typer or rich.
"""

__all__ = [
    "ENV_DSN",
    "EXIT_BAD_INPUT",
    "EXIT_CHECK_FAILED",
    "EXIT_CHECK_INCOMPLETE",
    "EXIT_DEGRADED",
    "EXIT_FAILING",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
]

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
"""The CLI cannot run here: an extra is missing, or ``eskit demo`` outside a checkout."""
EXIT_BAD_INPUT = 2
"""Bad input: a missing file, not an eskit store, an unknown stream, a bad option."""
EXIT_CHECK_FAILED = 3
"""``eskit upcast-check`` found events today's code cannot read; ``eskit verify`` found
events altered, removed, inserted or reordered (or a checkpoint that does not match)."""
EXIT_CHECK_INCOMPLETE = 4
"""``eskit upcast-check`` could not check everything: no event classes were named."""

EXIT_DEGRADED = 1
"""``eskit health``: the store serves, but a check is degraded (lag, a pending migration,
an old transaction). The same number as ``EXIT_UNAVAILABLE``: both mean "not ready"."""
EXIT_FAILING = 2
"""``eskit health``: the store cannot be opened or read. The same number as
``EXIT_BAD_INPUT``, which a missing file or an unreachable server exits with elsewhere."""

ENV_DSN = "ESKIT_DSN"
"""The store to use when a command's ``DB`` argument is left out (keeps passwords off
the command line, where ``ps`` and shell history would show them)."""
