"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import pytest

from tests.cli.helpers import eskit_cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    result = eskit_cli("demo", cwd=cwd)
    return result, cwd / "eskit-demo.db"
