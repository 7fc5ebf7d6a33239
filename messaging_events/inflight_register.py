"""The in-flight register's records: every batch the bridge hands to Celery, from just before it is
published (`track`) until its task has finished it (`forget`). Redis only, in the broker's Redis, so
that the bridge can write it without loading the workers' code; `services.inflight.reconcile` reads it
to find the batches the broker lost (the why is in that module's docstring).
"""

import json
import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings

from messaging_events import broker
from messaging_events.contract.jobs import BridgedJob

logger = logging.getLogger(__name__)

REGISTER_KEY = "crm:inflight"  # sorted set: task id -> when the batch was (re)published
BATCHES_KEY = "crm:inflight:batches"  # hash: task id -> {"queue", "jobs", "republished"}
QUEUES_KEY = "crm:inflight:queues"  # hash: task id -> queue, read on every pass without the batches
SUSPECTS_KEY = "crm:inflight:suspects"  # hash: task id -> when a pass first found its message nowhere
_client: redis.Redis | None = None


def client() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return _client


def track(task_id: str, queue: str, jobs: list[BridgedJob], *, republished: int = 0) -> int:
    """Record a batch about to be published, and return how many messages are waiting in its queue
    (read in the same round trip; the bridge batches more while the workers are behind). Raises when
    the broker's Redis does not answer, so the caller publishes nothing it has not recorded."""
    body = json.dumps({"queue": queue, "jobs": jobs, "republished": republished}, separators=(",", ":"))
    with client().pipeline(transaction=True) as pipe:
        # redis-py types a pipelined command's return as the command's reply, not as the pipeline it is.
        pipe.zadd(REGISTER_KEY, {task_id: time.time()}).hset(BATCHES_KEY, task_id, body)  # type: ignore[union-attr]
        pipe.hset(QUEUES_KEY, task_id, queue)
        first_llen = len(pipe)  # the record's commands come first; the LLEN replies follow
        for key in broker.queue_keys(queue):
            pipe.llen(key)
        replies = pipe.execute()
    return sum(replies[first_llen:])


def forget(task_id: str | None) -> None:
    """The batch is done: every event in it reached a recorded state. A record left behind by a
    failure here is republished later, and the second run changes nothing."""
    if not task_id:
        return
    try:
        with client().pipeline(transaction=True) as pipe:
            # As in `track`: redis-py types a pipelined command's return as its reply.
            pipe.zrem(REGISTER_KEY, task_id).hdel(BATCHES_KEY, task_id).hdel(QUEUES_KEY, task_id)  # type: ignore[attr-defined]
            pipe.hdel(SUSPECTS_KEY, task_id).execute()  # type: ignore[attr-defined]
    except redis.RedisError as exc:
        logger.warning("inflight_forget_failed task=%s error=%s", task_id, type(exc).__name__)


@dataclass
class RegisterFigures:
    batches: int
    oldest_age_s: float | None


def figures(*, now: float | None = None) -> RegisterFigures:
    redis_client = client()
    oldest = redis_client.zrange(REGISTER_KEY, 0, 0, withscores=True)
    # redis-py types a `withscores` reply as members or (member, score) pairs alike.
    age = None if not oldest else round(max(0.0, (now or time.time()) - oldest[0][1]), 1)  # type: ignore[operator]
    return RegisterFigures(batches=int(redis_client.zcard(REGISTER_KEY)), oldest_age_s=age)
