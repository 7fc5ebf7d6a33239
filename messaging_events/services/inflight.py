"""The in-flight register: every batch the bridge hands to Celery, until a worker has finished it.

Why it exists: kombu's Redis transport takes a message off its queue (BRPOP) and only then, in a
second command, copies it into the `unacked` hash that protects it. A worker main process killed
between the two (an OOM kill, `kill -9`), or killed while the BRPOP reply still sits unread in its
socket, takes the message with it: it is in no queue and in no hash, and BullMQ has already
completed its jobs. The fault suite lost one such batch of two events (celery/kombu#1836, #305).

So the bridge records each batch in the register (`messaging_events.inflight_register.track`) before
publishing it, keyed by its Celery task id, and the task forgets it when the batch is done (`forget`).
`reconcile` (beat, every INFLIGHT_RECONCILE_INTERVAL_S) looks at the records older than INFLIGHT_GRACE_S and republishes
those whose message is in no queue and in no worker's `unacked` hash on two passes in a row. A
republished batch can at worst run twice, which the inbox makes harmless; a lost one never runs.

Finding a message without reading a whole backlog: kombu queues are FIFO (LPUSH, BRPOP), so a batch
tracked after the oldest message still queued may be anywhere in the queue and is left alone; only a
batch tracked before it (consumed, lost, or put back by a requeue) is searched for, page by page.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import redis
from django.conf import settings

from messaging_events import broker
from messaging_events import inflight_register as register
from messaging_events.contract.jobs import BridgedJob
from messaging_events.services import inbox

logger = logging.getLogger(__name__)

CANDIDATES_PER_PASS = 500
SCAN_PAGE = 500
# How many messages at the consumer end of a queue are read to find one the register knows.
HEAD_PROBE = 50


class Republish(Protocol):
    """Tracks the batch again (`track`) and publishes it under the same task id."""

    def __call__(self, jobs: list[BridgedJob], *, queue: str, task_id: str, republished: int) -> object: ...


@dataclass
class ReconcileReport:
    candidates: int = 0  # tracked for longer than the grace period
    queued: int = 0  # still waiting in their queue (or possibly: tracked after its oldest message)
    searched: int = 0  # tracked before the oldest queued message, so looked for page by page
    unacked: int = 0  # held by a worker, or stranded by a dead one until the visibility timeout
    suspects: int = 0  # found nowhere for the first time: looked for again at the next pass
    republished: list[str] = field(default_factory=list)


def reconcile(republish: Republish, *, now: float | None = None) -> ReconcileReport:
    """One pass; see the module docstring. `republish` publishes a batch again under its task id."""
    now = now or time.time()
    client = register.client()
    report = ReconcileReport()
    rows = client.zrangebyscore(
        register.REGISTER_KEY,
        "-inf",
        now - settings.INFLIGHT_GRACE_S,
        start=0,
        num=CANDIDATES_PER_PASS,
        withscores=True,
    )
    # As in `figures`: a `withscores` reply, typed as members or pairs alike.
    candidates = {_text(task_id): score for task_id, score in rows}  # type: ignore[misc, arg-type]
    report.candidates = len(candidates)
    previous_suspects = {_text(task_id) for task_id in client.hkeys(register.SUSPECTS_KEY)}
    if not candidates:
        if previous_suspects:
            client.delete(register.SUSPECTS_KEY)
        return report

    queue_of = _queues_of(client, list(candidates))
    floors = {queue: _oldest_queued_score(client, queue) for queue in set(queue_of.values())}
    searched = {}
    for task_id, score in candidates.items():
        queue = queue_of.get(task_id)
        if queue is None:  # forgotten since the first read
            continue
        if score >= floors[queue]:
            report.queued += 1
        else:
            searched[task_id] = queue
    # The queues first, then `unacked`: a message a worker takes meanwhile moves from one to the other
    # in that same direction, so it is seen at least once unless it falls in kombu's gap.
    report.searched = len(searched)
    in_queues = _find_in_queues(client, searched)
    report.queued += len(in_queues)
    held = _unacked_task_ids(client)
    missing = [task_id for task_id in searched if task_id not in in_queues and task_id not in held]
    report.unacked = len(searched) - len(in_queues) - len(missing)

    missing_now = set(missing)
    resolved = [task_id for task_id in previous_suspects if task_id not in missing_now]
    if resolved:
        client.hdel(register.SUSPECTS_KEY, *resolved)
    for task_id in missing:
        if task_id not in previous_suspects:
            client.hset(register.SUSPECTS_KEY, task_id, now)
            report.suspects += 1
        elif _republish(client, task_id, republish):
            report.republished.append(task_id)
    return report


def _republish(client: redis.Redis, task_id: str, republish: Republish) -> bool:
    # Beat can start a pass while the last still runs in another worker child, and both then hold the same
    # suspect: only the pass whose HDEL removes it publishes the batch again.
    if not client.hdel(register.SUSPECTS_KEY, task_id):
        return False
    raw = client.hget(register.BATCHES_KEY, task_id)
    if raw is None:  # finished meanwhile
        return False
    body = json.loads(raw)
    times = int(body.get("republished", 0)) + 1
    events = len(body["jobs"])
    if times > settings.INFLIGHT_MAX_REPUBLISH:
        # Published this often and never finished: the batch fails in a way no redelivery fixes (a worker
        # that dies on it is requeued by kombu instead, and never reaches this point). Its events that
        # have no final state end `failed`, replayable, with the reason.
        for job in body["jobs"]:
            inbox.record_failure(job, f"lost by the broker and published again {times - 1} times without finishing")
        register.forget(task_id)
        logger.error("inflight_abandoned task=%s queue=%s events=%d", task_id, body["queue"], events)
        return False
    republish(body["jobs"], queue=body["queue"], task_id=task_id, republished=times)
    logger.error(
        "inflight_republished task=%s queue=%s events=%d times=%d: the batch was in no queue and held by no worker",
        task_id,
        body["queue"],
        events,
        times,
    )
    return True


def _queues_of(client: redis.Redis, task_ids: list[str]) -> dict[str, str]:
    queues = client.hmget(register.QUEUES_KEY, task_ids)
    return {task_id: _text(queue) for task_id, queue in zip(task_ids, queues, strict=True) if queue}


def _oldest_queued_score(client: redis.Redis, queue: str) -> float:
    """The register's time of the oldest tracked message still in `queue` (+inf when none is):
    anything tracked at or after it may still be behind it."""
    with client.pipeline(transaction=False) as pipe:
        for key in broker.queue_keys(queue):
            pipe.lrange(key, -HEAD_PROBE, -1)
        heads = [task_id for page in pipe.execute() for task_id in broker.queued_task_ids(page)]
    scores = [score for score in client.zmscore(register.REGISTER_KEY, heads) if score is not None] if heads else []
    return min(scores, default=float("inf"))


def _find_in_queues(client: redis.Redis, wanted: dict[str, str]) -> set[str]:
    """Which of `wanted` (task id -> queue) sit in their queue. Pages from the publishing end with
    positive indexes: a publish shifts what is left to read further on, never past the reader."""
    found: set[str] = set()
    for queue in sorted(set(wanted.values())):
        ids = {task_id for task_id, q in wanted.items() if q == queue}
        for key in broker.queue_keys(queue):
            start = 0
            while ids - found:
                page = client.lrange(key, start, start + SCAN_PAGE - 1)
                if not page:
                    break
                found |= ids & set(broker.queued_task_ids(page))
                start += SCAN_PAGE
    return found


def _unacked_task_ids(client: redis.Redis) -> set[str]:
    return set(broker.unacked_task_ids(client.hvals(broker.unacked_key())))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
