"""bridge_status figures match a state set up by hand, and thresholds give exit status 1."""

import json
import re
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from messaging_events import inflight_register
from messaging_events.broker import queue_keys
from messaging_events.models import InboundEvent
from messaging_events.publishing import publish_batch
from messaging_events.tasks import apply_event_batch
from tests.ops.conftest import bullmq_queue, run

pytestmark = pytest.mark.django_db


def _inbox_row(n: int, status: str, *, age: timedelta = timedelta(0), event_type: str = "message.sent") -> InboundEvent:
    row = InboundEvent.objects.create(
        tenant_ref="t-status",
        idempotency_key=f"status-{n}",
        event_type=event_type,
        priority="normal",
        messaging_contact_id=f"c-{n}",
        status=status,
        raw_data={"payload": {}},
    )
    if age:
        InboundEvent.objects.filter(pk=row.pk).update(received_at=timezone.now() - age)
    return row


def _publish_jobs(count: int, age_s: int) -> None:
    async def go() -> None:
        queue = bullmq_queue()
        stamp = int((time.time() - age_s) * 1000)
        await queue.addBulk(
            [
                {"name": "contact.deleted", "data": {"payload": {"n": n}}, "opts": {"timestamp": stamp + n}}
                for n in range(count)
            ]
        )
        await queue.close()

    run(go())


def _status(*args: str) -> tuple[int, dict]:
    out = StringIO()
    code = 0
    try:
        call_command("bridge_status", "--json", *args, stdout=out)
    except SystemExit as exc:
        code = exc.code
    return code, json.loads(out.getvalue())


@pytest.fixture
def known_state(broker_redis, bullmq_redis) -> dict:
    # BullMQ: 7 jobs waiting (no bridge runs), the oldest published 120 s ago.
    _publish_jobs(7, age_s=120)
    # Celery: 2 messages on high, 3 on normal of which one with a priority (kombu keeps it in
    # `normal\x06\x163`), none on low.
    for n in range(2):  # as the bridge publishes: tracked in the in-flight register
        publish_batch([], queue="high", task_id=f"known-{n}")
    for priority in (None, None, 5):
        apply_event_batch.apply_async(args=[[]], queue="normal", priority=priority)
    # Inbox: recent rows and rows older than an hour.
    _inbox_row(1, "applied")
    _inbox_row(2, "applied")
    _inbox_row(3, "applied", age=timedelta(hours=3))
    _inbox_row(4, "rejected")
    _inbox_row(5, "failed", age=timedelta(hours=2))
    _inbox_row(6, "parked", age=timedelta(minutes=10))
    oldest_parked = _inbox_row(7, "parked", age=timedelta(hours=30), event_type="email.opened")
    return {"oldest_parked": oldest_parked}


def test_priority_keys_are_counted(broker_redis) -> None:
    apply_event_batch.apply_async(args=[[]], queue="normal", priority=5)
    assert broker_redis.llen("normal") == 0
    assert broker_redis.llen("normal\x06\x163") == 1
    assert "normal\x06\x163" in queue_keys("normal")


def test_figures_match_known_state(known_state, settings) -> None:
    settings.STATUS_MAX_PARKED_AGE_S = 7 * 24 * 3600
    code, status = _status()

    assert status["bullmq"] == {"waiting": 7, "active": 0, "delayed": 0, "failed": 0, "completed": 0}
    assert 115 <= status["oldest_waiting_age_s"] <= 180
    assert status["celery_queues"] == {"high": 2, "normal": 3, "low": 0}
    assert status["inflight_batches"] == 2
    assert 0 <= status["inflight_oldest_age_s"] < 60
    assert status["inbox_total"] == {
        "received": 0,
        "applied": 3,
        "ignored": 0,
        "rejected": 1,
        "parked": 2,
        "failed": 1,
    }
    assert status["inbox_last_hour"] == {
        "received": 0,
        "applied": 2,
        "ignored": 0,
        "rejected": 1,
        "parked": 1,
        "failed": 0,
    }
    parked = status["oldest_parked"]
    assert parked["id"] == known_state["oldest_parked"].pk
    assert parked["event_type"] == "email.opened"
    assert 30 * 3600 - 60 <= parked["age_s"] <= 30 * 3600 + 60
    # The oldest waiting job (120 s) is older than the default 300 s? No: healthy on that count.
    assert status["problems"] == []
    assert status["healthy"] is True
    assert code == 0


def test_each_threshold_gives_exit_status_1(known_state, settings) -> None:
    settings.STATUS_MAX_WAITING_AGE_S = 60
    settings.STATUS_MAX_QUEUE_DEPTH = 2
    settings.STATUS_MAX_PARKED_AGE_S = 24 * 3600
    code, status = _status()
    assert code == 1
    assert status["healthy"] is False
    problems = "\n".join(status["problems"])
    assert "STATUS_MAX_WAITING_AGE_S=60" in problems
    assert "Celery queue normal holds 3 messages" in problems
    assert "Celery queue high" not in problems  # 2 is not more than 2
    assert f"parked event {known_state['oldest_parked'].pk}" in problems
    assert "STATUS_MAX_FAILED_JOBS" not in problems


def test_a_batch_no_worker_finished_crosses_the_in_flight_threshold(known_state, settings) -> None:
    # Published 20 minutes ago and never finished (a stopped or stuck worker): tracked, never forgotten.
    inflight_register.client().zadd(inflight_register.REGISTER_KEY, {"stuck": time.time() - 1200})
    settings.STATUS_MAX_WAITING_AGE_S = 3600
    settings.STATUS_MAX_PARKED_AGE_S = 48 * 3600
    code, status = _status()
    assert status["inflight_batches"] == 3
    assert 1199 <= status["inflight_oldest_age_s"] <= 1260
    assert code == 1
    assert len(status["problems"]) == 1
    assert "STATUS_MAX_INFLIGHT_AGE_S=900" in status["problems"][0]


def test_failed_bullmq_jobs_cross_the_threshold(broker_redis, bullmq_redis, settings) -> None:
    from tests.ops.test_redrive_bullmq import make_failed_jobs

    make_failed_jobs([("contact.deleted", {"payload": {"eventId": "f1"}})])
    settings.STATUS_MAX_FAILED_JOBS = 0
    code, status = _status()
    assert status["bullmq"]["failed"] == 1
    assert code == 1
    assert any("1 failed BullMQ jobs" in p for p in status["problems"])


def test_table_output(known_state, settings) -> None:
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("bridge_status", stdout=out)
    text = out.getvalue()
    assert "BullMQ crm-events" in text
    assert "UNHEALTHY" in text
    assert "normal" in text
    assert re.search(r"in flight \(unfinished\)\s+2 batches, oldest \d+\.\ds", text), text
