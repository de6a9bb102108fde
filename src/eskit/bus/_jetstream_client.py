"""The nats-py edge shared by the JetStream sink and source: connect, declare a stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from eskit.bus._jetstream_config import JetStreamOptions
from eskit.errors import BrokerUnavailableError, BusError, MissingExtraError

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext, api
except ImportError as exc:  # pragma: no cover - the nats extra installs it
    raise MissingExtraError("nats", "the NATS JetStream sink and source", name=exc.name) from exc

__all__ = ["Client", "JetStreamContext", "Msg", "api", "connect", "ensure_stream", "nats"]

log = logging.getLogger("eskit.bus.jetstream")


async def connect(opts: JetStreamOptions, name: str, *, reconnect: bool, **cbs: Any) -> Client:
    async def on_error(exc: Exception) -> None:
        log.debug("NATS %s: %s", opts.display, exc)

    nc = Client()
    try:
        # nats-py retries a first connect forever when reconnecting is on: bound it here.
        await asyncio.wait_for(nc.connect(
            servers=[opts.server], name=opts.name or name,
            connect_timeout=math.ceil(opts.connect_timeout),
            allow_reconnect=reconnect, max_reconnect_attempts=-1 if reconnect else 0,
            reconnect_time_wait=1, error_cb=on_error, **cbs,
        ), timeout=opts.connect_timeout + 1)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        raise BrokerUnavailableError(f"NATS at {opts.display} is unreachable: {exc!r}") from exc
    return nc


async def ensure_stream(js: JetStreamContext, opts: JetStreamOptions, name: str,
                         subjects: list[str]) -> None:
    """Create the stream if it is missing; refuse one that does not capture ``subjects``."""
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        config = api.StreamConfig(
            name=name, subjects=subjects, duplicate_window=opts.dupe_window,
            storage=api.StorageType(opts.storage), num_replicas=opts.replicas,
            max_age=opts.max_age or None, retention=api.RetentionPolicy.LIMITS,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.APIError as exc:
            raise BusError(f"cannot create JetStream stream {name} for {subjects}: {exc}") from exc
        return
    have = info.config.subjects or []
    if not set(subjects) <= set(have):
        raise BusError(
            f"JetStream stream {name} exists with subjects {have}, not {subjects}: "
            "choose another stream or prefix"
        )
