"""`broker.queue_depths`: the one reader of Celery queue depth, over every list kombu keeps for a queue."""

from messaging_events import broker


def test_depths_count_every_priority_list_of_each_queue(broker_redis) -> None:
    broker_redis.lpush("low", b"{}")
    broker_redis.lpush("low\x06\x163", b"{}", b"{}")  # priority 3: kombu's second list for `low`
    broker_redis.lpush("high\x06\x169", b"{}")
    assert broker.queue_depths(broker_redis) == {"high": 1, "normal": 0, "low": 3}
    assert broker.queue_depths(broker_redis, ["low"]) == {"low": 3}
