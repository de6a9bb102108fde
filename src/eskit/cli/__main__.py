"""``python -m eskit.cli``: the same as the ``eskit`` command."""

from eskit.cli import main

main()
