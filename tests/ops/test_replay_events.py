"""replay_events: selection, --dry-run, and replaying through the real task changes nothing already applied."""

import base64
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from crm.models import Profile
from messaging_events.broker import queue_keys
from messaging_events.models import InboundEvent
from messaging_events.services.inbox import job_from_row
from messaging_events.services.status import celery_queue_depths
from messaging_events.tasks import apply_event_batch

pytestmark = pytest.mark.django_db


def _row(key: str, status: str, *, name: str = "contact.deleted", tenant: str = "t-replay", **extra) -> InboundEvent:
    payload = {"eventId": key, "tenantId": tenant, "contactId": f"c-{key}"}
    if name == "contact.created":
        payload["firstName"] = "Replay"
    return InboundEvent.objects.create(
        tenant_ref=tenant,
        idempotency_key=key,
        event_type=name,
        priority="normal",
        messaging_contact_id=f"c-{key}",
        bullmq_job_id=f"j-{key}",
        job_name=name,
        raw_data={"payload": payload},
        job_timestamp=timezone.now() - timedelta(minutes=5),
        status=status,
        attempts=1,
        **extra,
    )


def _drain(broker_redis, queue: str = "normal") -> list[tuple[list, dict]]:
    """Take the Celery messages off a queue (every priority list) and decode their arguments."""
    messages = []
    for key in queue_keys(queue):
        while (raw := broker_redis.rpop(key)) is not None:
            envelope = json.loads(raw)
            assert envelope["headers"]["task"] == "messaging_events.apply_event_batch"
            args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
            messages.append((args, kwargs))
    return messages


def _replay(*args: str) -> str:
    out = StringIO()
    call_command("replay_events", "--no-progress", *args, stdout=out)
    return out.getvalue()


def _snapshot(row: InboundEvent) -> tuple:
    row.refresh_from_db()
    return row.status, row.attempts, row.deliveries, row.applied_at, row.error, row.tenant_id


def test_replaying_an_applied_event_changes_nothing(broker_redis) -> None:
    applied = _row("evt-applied", "applied", name="contact.created", applied_at=timezone.now())
    before = _snapshot(applied)

    # The task itself, synchronously, as a replay.
    result = apply_event_batch.apply(args=[[job_from_row(applied)]], kwargs={"replay": True}).get()
    assert result == {"applied": 1}
    assert _snapshot(applied) == before
    assert not Profile.objects.exists()

    # Through the command: --id names it, a message is published, and running it changes nothing.
    out = _replay("--id", str(applied.pk))
    assert "changes nothing" in out
    [(args, kwargs)] = _drain(broker_redis)
    assert kwargs == {"replay": True}
    assert [job["key"] for job in args[0]] == ["evt-applied"]
    apply_event_batch.apply(args=args, kwargs=kwargs).get()
    assert _snapshot(applied) == before
    assert not Profile.objects.exists()


def test_default_selection_replays_failed_and_parked_only(broker_redis) -> None:
    failed = _row("evt-failed", "failed", error="internal error: boom")
    parked = _row("evt-parked", "parked", name="message.sent")
    _row("evt-rejected", "rejected")
    _row("evt-applied-2", "applied", applied_at=timezone.now())
    _row("evt-ignored", "ignored")

    out = _replay()
    assert "replayed 2 event(s) (failed=1, parked=1)" in out
    messages = _drain(broker_redis)
    keys = sorted(job["key"] for args, _ in messages for job in args[0])
    assert keys == ["evt-failed", "evt-parked"]
    assert all(kwargs == {"replay": True} for _, kwargs in messages)

    # The failed contact.deleted is now judged again through the task: ignored, one more attempt, no new delivery.
    for args, kwargs in messages:
        apply_event_batch.apply(args=[[j for j in args[0] if j["key"] == "evt-failed"]], kwargs=kwargs).get()
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.deliveries) == ("ignored", 2, 1)
    parked.refresh_from_db()
    assert parked.status == "parked"


def test_filters(broker_redis) -> None:
    _row("evt-r1", "rejected", tenant="t-a")
    _row("evt-r2", "rejected", tenant="t-b")
    old = _row("evt-f-old", "failed", tenant="t-a")
    InboundEvent.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=3))
    _row("evt-f-new", "failed", tenant="t-a", name="contact.created")

    assert "replayed 2 event(s) (rejected=2)" in _replay("--status", "rejected")
    _drain(broker_redis)
    assert "replayed 1 event(s) (rejected=1)" in _replay("--status", "rejected", "--tenant", "t-b")
    _drain(broker_redis)
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert "replayed 1 event(s) (failed=1)" in _replay("--since", since)
    assert [j["key"] for a, _ in _drain(broker_redis) for j in a[0]] == ["evt-f-new"]
    assert "replayed 1 event(s) (failed=1)" in _replay("--type", "contact.deleted")
    assert [j["key"] for a, _ in _drain(broker_redis) for j in a[0]] == ["evt-f-old"]


def test_dry_run_publishes_and_writes_nothing(broker_redis) -> None:
    rows = [_row("evt-d1", "failed"), _row("evt-d2", "parked"), _row("evt-d3", "applied", applied_at=timezone.now())]
    before = [_snapshot(row) for row in rows]

    out = _replay("--dry-run")
    assert "dry run: would replay 2 event(s) (failed=1, parked=1); nothing published." in out
    out = _replay("--dry-run", "--id", str(rows[2].pk))
    assert "would replay 1 event(s) (applied=1)" in out

    assert celery_queue_depths() == {"high": 0, "normal": 0, "low": 0}
    assert broker_redis.dbsize() == 0
    assert [_snapshot(row) for row in rows] == before
