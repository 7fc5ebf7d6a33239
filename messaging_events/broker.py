"""Where kombu's Redis transport keeps Celery's messages, read by the status page and the in-flight register.

With priority steps a queue is several lists (`normal`, `normal\\x06\\x163`, `normal\\x06\\x166`,
`normal\\x06\\x169`; see `kombu.transport.redis.Channel._q_for_pri`), all under the optional
`global_keyprefix`. Delivered, unacknowledged messages sit in the `unacked` hash as
`[message, exchange, routing key]`, keyed by delivery tag; a message's task id is its `headers.id`.
"""

import json
from collections.abc import Iterable

import redis
from django.conf import settings
from kombu.transport.redis import PRIORITY_STEPS, Channel


def _options() -> dict:
    return settings.CELERY_BROKER_TRANSPORT_OPTIONS or {}


def queue_keys(queue: str) -> list[str]:
    """Every Redis list kombu may use for `queue`, one per priority step."""
    steps = _options().get("priority_steps", PRIORITY_STEPS)
    prefix = _options().get("global_keyprefix", "")
    keys = [f"{prefix}{queue}{Channel.sep}{step}" if step else f"{prefix}{queue}" for step in sorted(set(steps))]
    return list(dict.fromkeys(keys))


def queue_depths(client: redis.Redis, queues: Iterable[str] | None = None) -> dict[str, int]:
    """Messages waiting in each Celery queue (every priority step's list), in one round trip.
    `queues` defaults to every queue, in consumption order (`settings.CELERY_QUEUE_NAMES`)."""
    names = tuple(settings.CELERY_QUEUE_NAMES if queues is None else queues)
    layout = [(name, queue_keys(name)) for name in names]
    with client.pipeline(transaction=False) as pipe:
        for _, keys in layout:
            for key in keys:
                pipe.llen(key)
        sizes = pipe.execute()
    depths, offset = {}, 0
    for name, keys in layout:
        depths[name] = int(sum(sizes[offset : offset + len(keys)]))
        offset += len(keys)
    return depths


def unacked_key() -> str:
    return _options().get("global_keyprefix", "") + _options().get("unacked_key", "unacked")


def queued_task_ids(raw_messages: Iterable[bytes | str]) -> list[str]:
    """The task ids of raw messages as a queue list holds them."""
    return [_task_id(json.loads(raw)) for raw in raw_messages]


def unacked_task_ids(raw_entries: Iterable[bytes | str]) -> list[str]:
    """The task ids of the `unacked` hash's values."""
    return [_task_id(json.loads(raw)[0]) for raw in raw_entries]


def _task_id(message: dict) -> str:
    return str((message.get("headers") or {}).get("id") or "")
