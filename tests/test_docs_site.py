"""The documentation site builds strictly, offline, and documents the whole public API.

`mkdocs build --strict` fails on any warning: a broken link or anchor, a page left out
of the navigation, a docstring reference mkdocstrings cannot resolve. It runs once per
session into a temporary directory; the tests below then read what it wrote.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import eskit

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
# An object's heading in mkdocstrings' HTML: <h2 id="eskit.errors.EskitError" class="doc ...">
OBJECT_ANCHOR = re.compile(r'<h\d id="(eskit(?:\.[A-Za-z_][A-Za-z0-9_]*)+)"[^>]*class="doc')
DIRECTIVE = re.compile(r"^::: (eskit(?:\.\w+)*)\s*$", re.MULTILINE)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    # No network: the build must not need one (theme.font is false; no plugin fetches).
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-5000:]}"
    return out


def _resolve(dotted: str) -> list[object]:
    # What an anchor can name, both ways: attribute by attribute from the top (so
    # eskit.maintenance.stats is the function the package exports), and the longest
    # importable module then attributes (eskit.maintenance.stats.stats, in the module
    # that the function's name hides).
    found: list[object] = []
    first, *rest = dotted.split(".")
    obj: object = importlib.import_module(first)
    try:
        for i, name in enumerate(rest):
            if not hasattr(obj, name) and isinstance(obj, ModuleType):
                importlib.import_module(".".join([first, *rest[: i + 1]]))
            obj = getattr(obj, name)
        found.append(obj)
    except (AttributeError, ImportError):
        pass
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            break
        found.append(obj)
        break
    return found


def _documented(site: Path) -> dict[str, list[str]]:
    # Every object heading on the reference pages, by its last name.
    found: dict[str, list[str]] = {}
    for page in (site / "reference").rglob("index.html"):
        for anchor in OBJECT_ANCHOR.findall(page.read_text()):
            found.setdefault(anchor.rsplit(".", 1)[-1], []).append(anchor)
    return found


def test_key_pages_exist(site: Path) -> None:
    for page in [
        "index.html", "getting-started/index.html", "architecture/index.html",
        "reference/index.html", "reference/cli/index.html",
        "reference/benchmarks/index.html", "reference/changelog/index.html",
        "reference/errors/index.html", "search/search_index.json",
    ]:
        assert (site / page).is_file(), page
    # Every guide in docs/ became a page (strict mode also fails on one left out of nav).
    for guide in (ROOT / "docs").glob("*.md"):
        name = "index.html" if guide.stem == "index" else f"{guide.stem}/index.html"
        assert (site / name).is_file(), guide.name


def test_included_pages_and_diagrams_rendered(site: Path) -> None:
    changelog = (site / "reference/changelog/index.html").read_text()
    assert "Keep a Changelog" in changelog
    assert "include-markdown" not in changelog
    benchmarks = (site / "reference/benchmarks/index.html").read_text()
    assert "eskit benchmarks" in benchmarks
    assert "../docs/" not in benchmarks
    diagrams = (site / "architecture/index.html").read_text()
    assert diagrams.count('class="mermaid"') == 3


def test_cli_reference_has_every_command(site: Path) -> None:
    from typer.main import get_command

    from eskit.cli._app import make_app

    page = (site / "reference/cli/index.html").read_text()
    root = get_command(make_app())
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        assert f"eskit {name}" in page, name
        for sub in getattr(command, "commands", {}):
            assert f"eskit {name} {sub}" in page, f"{name} {sub}"
    assert "Usage: eskit relay run" in page  # the --help text itself, not just headings


def test_no_external_fonts_fetched(site: Path) -> None:
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "fonts.googleapis.com" not in text, page
        assert "fonts.gstatic.com" not in text, page


def test_every_public_name_is_documented(site: Path) -> None:
    documented = _documented(site)
    missing = []
    for name in eskit.__all__:
        obj = getattr(eskit, name)
        # The same object, not just the same name: eskit.Event, not some other Event.
        anchors = documented.get(name, [])
        if not any(obj is found for anchor in anchors for found in _resolve(anchor)):
            missing.append(name)
    assert missing == [], f"in eskit.__all__ but on no reference page: {missing}"


def test_reference_pages_are_generated_from_the_code() -> None:
    # One page per public module, each a mkdocstrings directive for a module that exists.
    modules = []
    for page in sorted(REFERENCE.glob("*.md")):
        modules.extend(DIRECTIVE.findall(page.read_text()))
    assert len(modules) == len(set(modules)), "a module documented twice"
    for module in modules:
        importlib.import_module(module)
    assert {"eskit", "eskit.errors", "eskit.stores.base", "eskit.bus", "eskit.aio"} <= set(
        modules
    )


def test_sphinx_roles_become_links(site: Path) -> None:
    # docs_hooks/sphinx_roles.py: a role never shows as raw ":class:" text, and one that
    # names a documented object is a link to it.
    for page in (site / "reference").rglob("index.html"):
        assert not re.search(r":(class|func|meth|mod|attr|exc|data):<code>", page.read_text()), page
    aggregate = (site / "reference/aggregate/index.html").read_text()
    assert 'href="../errors/#eskit.errors.InvalidInputError"' in aggregate


def test_a_stale_qualified_reference_is_caught() -> None:
    spec = importlib.util.spec_from_file_location(
        "sphinx_roles", ROOT / "docs_hooks" / "sphinx_roles.py"
    )
    assert spec is not None
    assert spec.loader is not None
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    assert roles._stale("eskit.NoSuchStore")  # a module has no such member
    assert roles._stale("eskit.NoSuchClass.method")  # nor a parent
    assert not roles._stale("eskit.Aggregate.raise_event")
    # An attribute set in __init__ is on no class: not provably stale.
    assert not roles._stale("eskit.EventRegistry.set_in_init")


def test_package_page_links_every_public_name(site: Path) -> None:
    # docs_hooks/public_api.py: one row per name in eskit.__all__, each a resolved link.
    page = (site / "reference/eskit/index.html").read_text()
    table = page[page.index("<table>") : page.index("</table>")]
    linked = set(re.findall(r'autorefs-internal"[^>]*><code>([^<]+)</code></a></td>', table))
    assert linked == set(eskit.__all__)
