"""URL schemes: the right module, imported only when used; typed errors otherwise."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

from eskit import InvalidInputError, MissingExtraError
from eskit.bus import urls
from eskit.bus.memory import MemorySink, MemorySource
from eskit.bus.urls import sink_for_url, source_for_url


def test_memory_urls_give_memory_sinks_and_sources() -> None:
    assert isinstance(sink_for_url("memory://u1"), MemorySink)
    source = source_for_url("memory://u1", group="g")
    assert isinstance(source, MemorySource)
    assert source.group == "g"


@pytest.mark.parametrize("url", ["kafka://x", "http://x", "no-scheme", "", "amqp:/x", 5])
def test_unknown_schemes_are_invalid_input(url: object) -> None:
    with pytest.raises(InvalidInputError):
        sink_for_url(url)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        source_for_url(url, group="g")  # type: ignore[arg-type]


def test_a_missing_client_library_is_a_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(urls.SCHEMES, "fake", (
        "eskit.bus.fake_module", "FakeSink", "FakeSource", "fakeextra", ("no_such_client_lib",)))
    with pytest.raises(MissingExtraError) as caught:
        sink_for_url("fake://host")
    assert caught.value.extra == "fakeextra"
    assert "eskit[fakeextra]" in str(caught.value)
    assert caught.value.name == "no_such_client_lib"


def test_a_module_failing_to_import_its_client_is_a_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(urls.SCHEMES, "fake", (
        "eskit.bus.fake_broken", "FakeSink", "FakeSource", "fakeextra", ()))
    real = importlib.import_module

    def failing(name: str, package: str | None = None) -> types.ModuleType:
        if name == "eskit.bus.fake_broken":
            raise ModuleNotFoundError("No module named 'fakeclient'", name="fakeclient")
        return real(name, package)

    monkeypatch.setattr(urls.importlib, "import_module", failing)
    with pytest.raises(MissingExtraError) as caught:
        source_for_url("fake://host", group="g")
    assert caught.value.name == "fakeclient"


def test_the_scheme_module_is_imported_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("eskit.bus.fake_lazy")
    module.FakeSink = MemorySink  # type: ignore[attr-defined]
    module.FakeSource = MemorySource  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "eskit.bus.fake_lazy", module)
    monkeypatch.setitem(urls.SCHEMES, "memory", (
        "eskit.bus.fake_lazy", "FakeSink", "FakeSource", "", ()))
    assert isinstance(sink_for_url("memory://lazy"), MemorySink)


def test_no_broker_client_is_imported_until_its_scheme_is_used() -> None:
    code = (
        "import sys, eskit.bus, eskit.bus.urls, eskit.bus.relay, eskit.bus.consumer;"
        "eskit.bus.urls.sink_for_url('memory://x');"
        "print(sorted(m for m in ('aio_pika', 'nats', 'redis', 'eskit.bus.rabbitmq',"
        " 'eskit.bus.jetstream', 'eskit.bus.redis_streams') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
