"""What was in flight at a fault, read from the brokers themselves, so a fault test can prove its fault
hit work and name the events it hit.

- Celery: kombu's Redis transport keeps every delivered, not yet acknowledged message in the `unacked`
  hash (delivery tag → message) and its delivery time in the `unacked_index` sorted set.
- BullMQ: a job a bridge holds is in `<prefix>:<queue>:active`; its data is in the job's hash.
- The inbox: `deliveries` counts every claim of an event's row (the first one included).
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass

import redis
from django.conf import settings

from messaging_events import broker
from messaging_events.contract.jobs import parse_job
from messaging_events.models import InboundEvent

BATCH_TASK = "messaging_events.apply_event_batch"


@dataclass(frozen=True)
class UnackedMessage:
    tag: str
    task_id: str
    keys: tuple[str, ...]


def _broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=10)


def unacked_batches() -> dict[str, UnackedMessage]:
    """Event batches delivered to a worker and not yet acknowledged, by task id."""
    client = _broker()
    try:
        raw = client.hgetall(broker.unacked_key())
    finally:
        client.close()
    batches = {}
    for tag, value in raw.items():
        message, _exchange, _routing_key = json.loads(value)
        batch = batch_message(message, tag.decode())
        if batch is not None:  # unpark and sweep tasks carry no events of the stream
            batches[batch.task_id] = batch
    return batches


def batch_message(message: dict, tag: str = "") -> UnackedMessage | None:
    """The task id and event keys of a Celery message carrying an event batch (None for other tasks)."""
    headers = message.get("headers", {})
    if headers.get("task") != BATCH_TASK:
        return None
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)
    jobs = args[0] if args else kwargs["jobs"]
    return UnackedMessage(tag, headers["id"], tuple(parse_job(job).idempotency_key for job in jobs))


def event_keys(batches: dict[str, UnackedMessage]) -> set[str]:
    return {key for batch in batches.values() for key in batch.keys}


def newest_delivery_age() -> float:
    """Seconds since the most recent delivery of a still-unacknowledged message (inf if none)."""
    client = _broker()
    try:
        newest = client.zrange("unacked_index", -1, -1, withscores=True)
    finally:
        client.close()
    return time.time() - newest[0][1] if newest else float("inf")


def active_job_ids() -> list[str]:
    client = redis.Redis.from_url(settings.BULLMQ_REDIS_URL, decode_responses=True, socket_timeout=10)
    try:
        return client.lrange(f"{settings.BULLMQ_PREFIX}:{settings.BULLMQ_QUEUE}:active", 0, -1)
    finally:
        client.close()


def job_event_keys(job_ids: list[str]) -> set[str]:
    """The eventIds carried by these BullMQ jobs (the known stream gives every event one)."""
    client = redis.Redis.from_url(settings.BULLMQ_REDIS_URL, decode_responses=True, socket_timeout=10)
    base = f"{settings.BULLMQ_PREFIX}:{settings.BULLMQ_QUEUE}"
    try:
        data = [client.hget(f"{base}:{job_id}", "data") for job_id in job_ids]
    finally:
        client.close()
    return {json.loads(item)["payload"]["eventId"] for item in data if item}


def deliveries(keys: set[str] | list[str]) -> dict[str, int]:
    """Each key's recorded deliveries: 0 when it has no inbox row or its row is not final yet."""
    rows = dict(
        InboundEvent.objects.filter(idempotency_key__in=list(keys))
        .exclude(status="received")
        .values_list("idempotency_key", "deliveries")
    )
    return {key: rows.get(key, 0) for key in keys}


def received_task_ids(worker_log: str) -> list[str]:
    """Task ids of event batches in the order a worker logged receiving them (one line per delivery)."""
    return re.findall(rf"Task {re.escape(BATCH_TASK)}\[([0-9a-f-]+)\] received", worker_log)
