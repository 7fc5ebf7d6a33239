"""A channel whose transport Celery's consumer already detached after a connection loss is closed, or
acknowledges a delivery, with a connection error, not the AttributeError that stopped the worker
(config/redis_transport.py)."""

import uuid
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings
from kombu import Connection
from kombu.transport import redis as kombu_redis

from config import celery_app, redis_transport
from messaging_events import broker


@pytest.fixture
def queue(broker_redis: redis.Redis) -> Iterator[str]:
    """A queue of the test's own, in a broker emptied before and after (no delivery left unacknowledged)."""
    yield f"transport-test-{uuid.uuid4().hex[:8]}"
    broker_redis.flushdb()


def _channel_holding_a_delivery(queue: str, transport: type | None = None):
    """A channel that received a message it has not acknowledged, whose transport Celery's
    `Connection.collect()` has just detached (its close of the channel raised first)."""
    connection = Connection(settings.CELERY_BROKER_URL, transport=transport)
    connection.SimpleQueue(queue).put({"n": 1})
    channel = connection.channel()
    message = channel.basic_get(queue, no_ack=False)
    assert message is not None
    connection.transport.client = None  # what `Connection._do_close_transport()` does
    return channel, message.delivery_tag


def test_the_app_connects_through_this_transport_with_the_redis_scheme() -> None:
    connection = celery_app.connection_for_write()
    try:
        assert isinstance(connection.transport, redis_transport.Transport)
        assert connection.as_uri().startswith("redis://")  # Flower's broker view reads the scheme
    finally:
        connection.release()


def test_closing_a_channel_of_a_detached_transport_keeps_its_delivery_for_the_visibility_restore(
    queue: str, broker_redis: redis.Redis
) -> None:
    channel, tag = _channel_holding_a_delivery(queue, redis_transport.Transport)
    with pytest.raises(redis.exceptions.ConnectionError):
        channel.close()  # the consumer's close ignores connection errors (kombu's maybe_close_channel)
    assert channel.closed
    # Restored to its queue by a worker once older than the visibility timeout.
    assert broker_redis.hkeys(broker.unacked_key()) == [tag.encode()]


def test_acknowledging_on_a_detached_transport_is_a_connection_error(queue: str, broker_redis: redis.Redis) -> None:
    """A batch that finished during the outage is acknowledged on its old channel, closed by then, after the
    reconnection: Celery logs a connection error there ("Couldn't ack") and goes on."""
    channel, tag = _channel_holding_a_delivery(queue, redis_transport.Transport)
    with pytest.raises(redis.exceptions.ConnectionError):
        channel.close()
    with pytest.raises(tuple(redis_transport.Transport.connection_errors)):
        channel.basic_ack(tag)
    assert broker_redis.hkeys(broker.unacked_key()) == [tag.encode()]


@pytest.mark.parametrize("use", ["close", "ack"])
def test_kombus_own_transport_still_raises_there(queue: str, use: str) -> None:
    """The bug this transport works around. When kombu fixes it, this fails: then delete config/redis_transport.py."""
    channel, tag = _channel_holding_a_delivery(queue, kombu_redis.Transport)
    if use == "ack":
        with pytest.raises(AttributeError, match="hostname"):
            channel.close()
    with pytest.raises(AttributeError, match="hostname"):
        channel.close() if use == "close" else channel.basic_ack(tag)
