"""Without the CloudEvents SDK (no broker extra), the bus says which extra to install."""

from __future__ import annotations

from tests.test_extras import run_without


def test_the_bus_without_cloudevents_is_a_missing_extra() -> None:
    result = run_without(("cloudevents",), """
        import eskit, eskit.bus, eskit.bus.memory, eskit.bus.urls
        try:
            import eskit.bus.relay
        except eskit.MissingExtraError as exc:
            assert exc.extra == "rabbitmq" and exc.name == "cloudevents", exc
            assert "pip install 'eskit[rabbitmq]'" in str(exc)
            print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
