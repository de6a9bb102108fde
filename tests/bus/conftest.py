"""Broker fixtures: the real servers this machine runs. In CI a missing one fails, never skips.

Each test names its own exchange / stream / key (``unique_name``) so that
concurrent test sessions sharing a broker never see each other's messages.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

RABBITMQ_URL = os.environ.get("ESKIT_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("ESKIT_TEST_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("ESKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_PORTS = {
    "RabbitMQ": ("127.0.0.1", 5672), "NATS": ("127.0.0.1", 4222), "Redis": ("127.0.0.1", 6379),
}


def _require(name: str) -> None:
    host, port = _PORTS[name]
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        problem = f"{name} at {host}:{port} is unreachable: {exc} (.ci/run starts it)"
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """A reachable RabbitMQ (guest/guest)."""
    _require("RabbitMQ")
    return RABBITMQ_URL


@pytest.fixture(scope="session")
def nats_url() -> str:
    """A reachable NATS server with JetStream."""
    _require("NATS")
    return NATS_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis."""
    _require("Redis")
    return REDIS_URL


def unique_name(prefix: str = "t") -> str:
    """A fresh name for an exchange, JetStream stream, Redis key or consumer group."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"
