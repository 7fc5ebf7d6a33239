"""What a process test waits on and asserts: BullMQ's job states, Celery's queues, the inbox, quiescence.

Celery's queues are read through `messaging_events.broker` (kombu's own key layout: every priority
step's list, and the `unacked` hash), the reader the status command and the in-flight register use.
"""

import base64
import json
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis
from django.conf import settings

from messaging_events import broker

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    message: str | Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy, and return it; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else (message or getattr(predicate, "__name__", "condition"))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10)


def bullmq_counts(
    queue: str | None = None, *, redis_url: str | None = None, prefix: str | None = None
) -> dict[str, int]:
    """Jobs per state, read from `<prefix>:<queue>:*`. `waiting` includes paused and prioritized jobs."""
    client = _redis(redis_url or settings.BULLMQ_REDIS_URL)
    base = f"{prefix or settings.BULLMQ_PREFIX}:{queue or settings.BULLMQ_QUEUE}"
    try:
        pipe = client.pipeline(transaction=False)
        pipe.llen(f"{base}:wait")
        pipe.llen(f"{base}:paused")
        pipe.zcard(f"{base}:prioritized")
        pipe.llen(f"{base}:active")
        pipe.zcard(f"{base}:delayed")
        pipe.zcard(f"{base}:completed")
        pipe.zcard(f"{base}:failed")
        wait, paused, prioritized, active, delayed, completed, failed = pipe.execute()
    finally:
        client.close()
    return {
        "waiting": wait + paused + prioritized,
        "active": active,
        "delayed": delayed,
        "completed": completed,
        "failed": failed,
    }


def bullmq_job_state(job_id: str, *, redis_url: str | None = None) -> str:
    """`completed`, `failed`, `active`, `waiting`, `delayed`, `removed` (hash gone) or `unknown`."""
    client = _redis(redis_url or settings.BULLMQ_REDIS_URL)
    base = f"{settings.BULLMQ_PREFIX}:{settings.BULLMQ_QUEUE}"
    try:
        if client.zscore(f"{base}:completed", job_id) is not None:
            return "completed"
        if client.zscore(f"{base}:failed", job_id) is not None:
            return "failed"
        if client.zscore(f"{base}:delayed", job_id) is not None:
            return "delayed"
        if job_id.encode() in client.lrange(f"{base}:active", 0, -1):
            return "active"
        if job_id.encode() in client.lrange(f"{base}:wait", 0, -1):
            return "waiting"
        if not client.exists(f"{base}:{job_id}"):
            return "removed"
        return "unknown"
    finally:
        client.close()


def celery_queue_depths(*, redis_url: str | None = None, queues: Iterable[str] | None = None) -> dict[str, int]:
    """Messages waiting per Celery queue (all priority steps), and `unacked`: delivered, not yet acknowledged."""
    client = _redis(redis_url or settings.CELERY_BROKER_URL)
    try:
        depths = broker.queue_depths(client, queues)
        depths["unacked"] = int(client.hlen(broker.unacked_key()))
    finally:
        client.close()
    return depths


def celery_messages(queue: str, *, redis_url: str | None = None) -> list[dict[str, Any]]:
    """The messages waiting in a Celery queue, in the order kombu delivers them (its priority steps' lists
    in turn, each oldest first): `{"task", "args", "kwargs", "headers"}`."""
    client = _redis(redis_url or settings.CELERY_BROKER_URL)
    try:
        lists = [client.lrange(key, 0, -1) for key in broker.queue_keys(queue)]
    finally:
        client.close()
    messages = []
    for raw in lists:
        for item in reversed(raw):  # kombu LPUSHes and BRPOPs: the tail is the oldest
            envelope = json.loads(item)
            body = envelope["body"]
            if envelope.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args, kwargs, _embed = json.loads(body)
            headers = envelope.get("headers", {})
            messages.append({"task": headers.get("task"), "args": args, "kwargs": kwargs, "headers": headers})
    return messages


def inbox_counts() -> dict[str, int]:
    from django.db.models import Count

    from messaging_events.models import InboundEvent

    rows = InboundEvent.objects.values("status").annotate(n=Count("id")).order_by()
    return {row["status"]: row["n"] for row in rows}


def quiescence_snapshot() -> dict[str, Any]:
    from messaging_events.models import InboundEvent

    return {
        "bullmq": bullmq_counts(),
        "celery": celery_queue_depths(),
        "inbox_received": InboundEvent.objects.filter(status="received").count(),
        "inbox_rows": InboundEvent.objects.count(),
    }


def _is_quiet(snap: dict[str, Any]) -> bool:
    return (
        snap["bullmq"]["waiting"] == 0
        and snap["bullmq"]["active"] == 0
        and snap["bullmq"]["delayed"] == 0
        and all(v == 0 for v in snap["celery"].values())
        and snap["inbox_received"] == 0
    )


def wait_for_quiescence(
    timeout: float = 60.0, *, stable_s: float = 1.0, interval: float = 0.1, min_inbox_rows: int = 0
) -> dict[str, Any]:
    """Wait until BullMQ has nothing waiting/active/delayed, Celery nothing queued or unacked, no
    inbox row is `received`, at least `min_inbox_rows` rows exist, and the inbox row count held
    still, all for `stable_s`. Returns the last snapshot."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    last_rows = -1
    snap: dict[str, Any] = {}
    while True:
        snap = quiescence_snapshot()
        now = time.monotonic()
        quiet = _is_quiet(snap) and snap["inbox_rows"] >= min_inbox_rows and snap["inbox_rows"] == last_rows
        last_rows = snap["inbox_rows"]
        if not quiet:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= stable_s:
            return snap
        if now >= deadline:
            raise AssertionError(f"not quiescent after {timeout}s: {snap}")
        time.sleep(interval)
