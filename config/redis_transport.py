"""kombu's Redis transport, with a fix for a worker that lost its broker while it waited on BRPOP.

kombu 5.7 closes the consumer's channel twice after a connection loss. Celery's consumer first calls
`Connection.collect()`: the channel's close reads the pending BRPOP, which raises ConnectionError before the
channel is marked closed, and collect goes on to detach the transport (`transport.client = None`). Celery
then calls `Connection.close()`, which closes the channel again; with delivered, unacknowledged messages it
tries to restore them, builds a new connection pool from `transport.client`, and raises AttributeError.
That is not a connection error, so the worker logs "Unrecoverable error", stops consuming, and hangs in its
shutdown: with Redis back, nothing is applied until someone restarts it (the Redis-restart fault test
caught it, in about one run in six).

Nothing can be restored at that point anyway (the transport no longer knows the broker). The messages stay
in kombu's `unacked` hash, and the reconnected worker restores them once they are older than the
visibility timeout, as it does for any batch a lost connection left behind (docs/reliability.md).
"""

from __future__ import annotations

from kombu import transport as kombu_transport
from kombu.transport import redis

ALIASES = ("redis", "rediss")


class Channel(redis.Channel):
    def close(self) -> None:
        try:
            super().close()
        except AttributeError:
            if self.connection.client is not None:
                raise


class Transport(redis.Transport):
    Channel = Channel


def install() -> None:
    """Make `redis://` URLs use this transport, in every process that loads the Celery app (before any
    connection resolves the alias). An alias, not CELERY_BROKER_TRANSPORT: the broker URL keeps its `redis`
    scheme, which Flower's broker view reads."""
    for alias in ALIASES:
        kombu_transport.TRANSPORT_ALIASES[alias] = f"{__name__}:Transport"
