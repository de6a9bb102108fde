"""The ``eskit`` command itself: help, the extra it needs, the installed script."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.cli.helpers import eskit_cli


def test_without_the_cli_extra_the_command_says_how_to_install_it_and_exits_1():
    result = eskit_cli("streams", "x.db", prelude="import sys; sys.modules['typer'] = None")
    assert result.returncode == 1
    assert result.stderr.strip() == "the eskit CLI needs the cli extra: pip install 'eskit[cli]'"


def test_help_lists_the_three_commands():
    result = eskit_cli("--help")
    assert result.returncode == 0
    for command in ("demo", "streams", "events"):
        assert command in result.stdout


def test_the_eskit_script_is_installed_next_to_python():
    script = os.path.join(os.path.dirname(sys.executable), "eskit")
    assert os.path.exists(script), "pip install must put the eskit console script beside python"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "streams" in result.stdout


def test_version_prints_the_installed_distributions_version():
    from importlib.metadata import version

    import eskit

    result = eskit_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"eskit {version('eskit')}"
    assert eskit.__version__ == version("eskit")
