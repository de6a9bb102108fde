"""Every ```python block in README.md and docs/*.md runs, twice, so the docs cannot rot."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for i, match in enumerate(BLOCK.finditer(page.read_text())):
            found.append((f"{page.relative_to(ROOT)}#{i + 1}", match.group(1)))
    return found


def test_every_docs_page_has_a_runnable_example() -> None:
    pages_with_code = {name.split("#")[0] for name, _ in _blocks()}
    for page in PAGES:
        assert str(page.relative_to(ROOT)) in pages_with_code, f"{page.name} has no example"


def _needs_postgres(name: str) -> bool:
    page = ROOT / name.split("#")[0]
    return "<!-- needs: postgres -->" in page.read_text()


@pytest.mark.parametrize(("name", "code"), _blocks(), ids=[n for n, _ in _blocks()])
def test_docs_example_runs(
    name: str, code: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if _needs_postgres(name):
        dsn = request.getfixturevalue("postgres_dsn")  # skips, or fails in CI, if down
        os.environ.setdefault("ESKIT_TEST_POSTGRES_DSN", dsn)
    # Run in a temporary directory, twice, as a reader pasting it again would: an example
    # must not depend on a fresh directory, a fresh schema or a fresh type registry.
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for _ in range(2):
            exec(compile(code, name, "exec"), {"__name__": f"docs_example_{abs(hash(name))}"})
    finally:
        os.chdir(cwd)
    assert list(tmp_path.iterdir()) == [], "an example left files behind: use a temporary directory"
