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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import psycopg
import redis
from django.conf import settings
from django.db import connection

from messaging_events import broker
from messaging_events.contract.jobs import parse_job
from messaging_events.models import InboundEvent
from tests.factories import make_job
from tests.processes.children import child_database_url

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


@contextmanager
def claims_held(jobs: list[dict]) -> Iterator[psycopg.Connection]:
    """An open transaction holding the inbox identities of these stream jobs (uncommitted rows): a batch
    carrying one of them waits at its claim, the first statement of its transaction, until the block
    ends. A fault aimed at that batch then lands mid-batch, however fast the workers are."""
    holder = psycopg.connect(child_database_url())
    try:
        for job in jobs:
            event = parse_job(make_job(job["name"], job["data"]))
            holder.execute(
                "INSERT INTO messaging_events_inboundevent (tenant_ref, event_type, idempotency_key, priority,"
                " messaging_contact_id, bullmq_job_id, job_name, job_attempts, deliveries, content_hash,"
                " received_at, updated_at, status, error, attempts, conflict, conflict_hash)"
                " VALUES (%s, %s, %s, 'normal', '', '', '', 0, 1, '', now(), now(), 'received', '', 0, '', '')",
                [event.tenant_ref, event.type.value, event.idempotency_key],
            )
        yield holder
    finally:
        holder.rollback()
        holder.close()


def blocked_client_ports(holder: psycopg.Connection) -> set[int]:
    """The client ports of the database sessions waiting on `holder`'s transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT client_port FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            [holder.info.backend_pid],
        )
        return {port for (port,) in cursor.fetchall()}


def process_on_port(processes: list[psutil.Process], port: int) -> psutil.Process:
    """The one of `processes` whose TCP connection has this local port (a worker child's database session)."""
    for process in processes:
        if any(conn.laddr and conn.laddr.port == port for conn in process.net_connections(kind="tcp")):
            return process
    raise LookupError(f"no process has a connection from port {port}")
