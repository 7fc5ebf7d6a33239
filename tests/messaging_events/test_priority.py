"""Routing and priority through the real bridge and Redis lists: each type lands on its Celery queue,
and a `high` event overtakes a `low` backlog."""

import pytest

from messaging_events.models import InboundEvent
from tests.messaging_events.contract.test_routing import SEED_TABLE
from tests.messaging_events.samples import contact_job, contact_payloads, message_job, message_payloads, seed_jobs
from tests.processes import (
    Processes,
    bullmq_counts,
    celery_messages,
    celery_queue_depths,
    publish_jobs,
    wait_for_quiescence,
    wait_until,
)
from tests.reliability.in_flight import blocked_client_ports, claims_held

pytestmark = pytest.mark.processes


def test_each_type_lands_on_its_celery_queue(processes: Processes) -> None:
    jobs = [
        *seed_jobs(),
        {
            **contact_job("contact.created", contact_payloads(prefix="p")["contact.created"]),
            "name": "messaging.contact.created",
        },
        {"name": "no.such.event", "data": {"payload": {}}},  # rejection records travel on normal
        message_job("message.failed", {"failedAt": "2025-12-14T08:00:05Z"}),  # rejected (no messageId), on high
    ]
    processes.start_bridge(env={"BRIDGE_LINGER_MS": "50"})  # and no worker: the messages stay in Redis
    ids = publish_jobs(jobs, ids=True)
    wait_until(lambda: bullmq_counts()["completed"] == len(jobs), 15, message=lambda: str(bullmq_counts()))

    depths = celery_queue_depths()
    assert depths["unacked"] == 0
    seen: dict[str, str] = {}
    bridged_ids = []
    for queue in ("high", "normal", "low"):
        messages = celery_messages(queue)
        assert len(messages) == depths[queue]
        for message in messages:
            assert message["task"] == "messaging_events.apply_event_batch"
            assert message["kwargs"] == {}
            assert message["headers"]["retries"] == 0
            for job in message["args"][0]:
                assert set(job) >= {"id", "name", "timestamp", "attemptsMade", "data"}
                assert job["timestamp"] > 0
                bridged_ids.append(job["id"])
                seen[job["name"]] = queue
    assert sorted(bridged_ids) == sorted(ids)
    assert {name: seen[name] for name in SEED_TABLE} == SEED_TABLE
    assert seen["contact.deleted"] == "normal"
    assert seen["messaging.contact.created"] == "normal"
    assert seen["no.such.event"] == "normal"
    assert seen["message.failed"] == "high"
    # One message carries a batch: the seed's 4 normal-queue contact events travelled together.
    normal = celery_messages("normal")
    assert max(len(m["args"][0]) for m in normal) >= 2
    assert len(normal) < sum(len(m["args"][0]) for m in normal)


def test_a_high_event_published_later_overtakes_the_low_backlog(processes: Processes) -> None:
    contact = "prio_contact"
    backlog = 1000
    created = contact_job("contact.created", contact_payloads(contact=contact, prefix="prio")["contact.created"])
    opens = [
        message_job(
            "email.opened", message_payloads(contact=contact, message=f"msg_{i}")["email.opened"], contact=contact
        )
        for i in range(backlog)
    ]
    processes.start_bridge()
    publish_jobs([created, *opens])
    wait_until(lambda: bullmq_counts()["completed"] == backlog + 1, 30, message=lambda: str(bullmq_counts()))
    assert celery_queue_depths()["low"] > 0

    # The backlog's inbox rows are held open: the worker's one child waits at the claim of its first batch,
    # so the high event meets the backlog in Celery however fast the worker would drain it.
    preference = contact_payloads(contact=contact, prefix="prio-high")["contactPreference.updated"]
    with claims_held(opens) as holder:
        processes.start_worker(concurrency=1)
        wait_until(lambda: blocked_client_ports(holder), 30, message="the first batch waiting at its claim")
        publish_jobs([contact_job("contactPreference.updated", {**preference, "emailOptIn": False})])
        wait_until(lambda: celery_queue_depths()["high"] == 1, 30, message=lambda: str(celery_queue_depths()))
    wait_for_quiescence(timeout=300, min_inbox_rows=backlog + 2)  # a loaded machine drains slowly

    high = InboundEvent.objects.get(event_type="contactPreference.updated")
    lows = InboundEvent.objects.filter(event_type="email.opened")
    assert high.status == "applied", high.error
    assert high.priority == "high"
    assert set(lows.values_list("status", flat=True)) == {"applied"}
    last_low = max(lows.values_list("applied_at", flat=True))
    assert high.applied_at < last_low
    after_high = lows.filter(applied_at__gt=high.applied_at).count()
    # Not merely "before the last one": it went ahead of most of what was still waiting.
    assert after_high >= backlog // 4, f"only {after_high} low events were applied after the high one"
