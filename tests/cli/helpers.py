"""Run the ``eskit`` command line in a subprocess, as a user would, and read its tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

def eskit_cli(*args, cwd=None, prelude="", env=None):
    """Run ``eskit ARGS`` (or, with a prelude, Python code that then runs it)."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONIOENCODING": "utf-8", "NO_COLOR": "1",
           # This checkout's src first: an editable install of another checkout
           # (a .pth file) must not supply the eskit under test.
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}  # env={"X": None} unsets X
    if prelude:
        code = f"{prelude}\nimport sys\nsys.argv = ['eskit', *sys.argv[1:]]\n" \
               "from eskit.cli import main\nmain()"
        command = [sys.executable, "-c", code, *map(str, args)]
    else:
        command = [sys.executable, "-m", "eskit.cli", *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, encoding="utf-8", env=env, cwd=cwd,
        timeout=120, check=False,
    )


def rows(output):
    """The cells of each table row in rich output."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.count("│") >= 3
    ]


def assert_no_traceback(result):
    assert "Traceback" not in result.stdout + result.stderr
