"""kombu's Redis transport, with a fix for a worker whose broker connection was lost with batches in hand.

After a connection loss, Celery's consumer detaches the old transport (`transport.client = None`, in
`Connection.collect()`) while channels of that connection are still in use: kombu 5.7 closes the consumer's
channel a second time, restoring its unacknowledged deliveries, and a batch that finished during the outage
is acknowledged on its old channel once the worker has reconnected. Both build a connection pool from
`transport.client`, and raised AttributeError. That is not a connection error, so the worker logged
"Unrecoverable error", stopped consuming, and hung in its shutdown: with Redis back, nothing was applied
until someone restarted it (the Redis-restart fault test caught both paths).

Here a channel of a detached transport raises a connection error instead, at the one place both paths meet.
Celery and kombu handle that as they handle any lost connection: the close ignores it, the acknowledgement is
logged as failed ("Couldn't ack"). The messages stay in kombu's `unacked` hash, and the reconnected worker
restores them once they are older than the visibility timeout; the inbox makes the second run harmless.
"""

from __future__ import annotations

from typing import Any

from kombu import transport as kombu_transport
from kombu.transport import redis
from redis.exceptions import ConnectionError as RedisConnectionError

ALIASES = ("redis", "rediss")


class Channel(redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection of this channel was closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]  # not in the kombu stubs


class Transport(redis.Transport):
    Channel = Channel


def install() -> None:
    """Make `redis://` URLs use this transport, in every process that loads the Celery app (before any
    connection resolves the alias). An alias, not CELERY_BROKER_TRANSPORT: the broker URL keeps its `redis`
    scheme, which Flower's broker view reads."""
    for alias in ALIASES:
        kombu_transport.TRANSPORT_ALIASES[alias] = f"{__name__}:Transport"
