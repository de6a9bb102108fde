"""The curl session and the Node.js client of docs/http-api.md, run against a real server.

Each needs its program (curl and jq, node): absent, the test skips on a developer's
machine and fails in CI (CI=true), where the image has them.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from eskit import SQLiteEventStore
from eskit.web import WebSettings, create_app

PAGE = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"
TOKEN = "docs-write-token"


def block(language: str, after: str = "") -> str:
    text = PAGE.read_text()
    start = text.index(after) if after else 0
    found = re.search(rf"^```{language}\n(.*?)^```", text[start:], re.DOTALL | re.MULTILINE)
    assert found, f"no ```{language} block in {PAGE.name}"
    return found.group(1)


def need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        message = f"{', '.join(missing)} not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def server(tmp_path: Path, serve):
    store = SQLiteEventStore(tmp_path / "shop.db")
    yield serve(create_app(store, settings=WebSettings(write_tokens=(TOKEN,)))), store
    store.close()


def test_the_curl_session_runs_as_written(server, tmp_path: Path) -> None:
    need("curl", "jq")
    running, store = server
    script = tmp_path / "session.sh"
    script.write_text("set -euo pipefail\n" + block("sh", "## A curl session"))
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "ESKIT_WRITE_TOKEN": TOKEN, "ESKIT_URL": running.url},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 ItemAdded\n1 CartOpened" in result.stdout
    assert "data: {" in result.stdout, "the subscription printed the events"
    assert [e.event_type for e in store.read_stream("cart/7")] == ["CartOpened", "ItemAdded"]


def test_the_node_client_appends_and_resumes_a_subscription(server, tmp_path: Path) -> None:
    need("node")
    running, store = server
    client = tmp_path / "client.mjs"
    client.write_text(block("js", "## A Node.js client"))
    result = subprocess.run(
        ["node", str(client)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "ESKIT_TOKEN": TOKEN, "ESKIT_URL": running.url},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == block("text", "```js")
    assert [e.event_data["sku"] for e in store.read_stream("cart/42")] == ["tea", "cup"]
