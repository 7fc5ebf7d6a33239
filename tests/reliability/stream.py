"""A known stream whose effects can be counted exactly, the invariants every scenario checks,
and the server restarts the fault scenarios use."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection

from crm.models import Activity, ActivityType, CampaignInteraction, ContactLink, InteractionType, Profile
from messaging_events.models import InboundEvent
from tests.factories import contact_created_job, email_opened_job, message_delivered_job, message_sent_job
from tests.processes import ROOT, bullmq_counts, celery_queue_depths, wait_for_quiescence, wait_until

TENANT = "t-reliability"
# Per contact: contact.created, message.sent, message.delivered, email.opened.
EVENTS_PER_CONTACT = 4


@dataclass
class Stream:
    prefix: str
    contacts: int
    jobs: list[dict] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.jobs)


def known_stream(prefix: str, contacts: int, *, phones_from: int = 0) -> Stream:
    """Every event carries an eventId, so each has a known inbox identity. Two streams in one test need
    distinct `phones_from`, or their contacts share phone numbers (and identities)."""
    stream = Stream(prefix, contacts)
    for i in range(contacts):
        contact, message = f"{prefix}-c{i}", f"{prefix}-m{i}"
        email, phone = f"{prefix}.person{i}@example.com", f"+2782{phones_from + i:07d}"
        stream.emails.append(email)
        stream.phones.append(phone)
        jobs = [
            contact_created_job(
                contact_id=contact,
                tenant_id=TENANT,
                event_id=f"{prefix}-created-{i}",
                email=email,
                phone=phone,
                first_name=f"First{i}",
                last_name=f"Last{i}",
                email_opt_in=True,
                sms_opt_in=False,
            ),
            message_sent_job(contact_id=contact, message_id=message, event_id=f"{prefix}-sent-{i}"),
            message_delivered_job(contact_id=contact, message_id=message, event_id=f"{prefix}-delivered-{i}"),
            email_opened_job(contact_id=contact, message_id=message, event_id=f"{prefix}-opened-{i}"),
        ]
        for job in jobs:
            stream.jobs.append({"name": job["name"], "data": job["data"]})
            stream.keys.append(job["data"]["payload"]["eventId"])
    return stream


# Beat with short intervals: its sweep re-applies parked events whose contact became known, the
# safety net behind the unpark the workers schedule themselves when an event links a contact; its
# reconciliation publishes again a batch the broker lost (messaging_events/services/inflight.py).
BEAT_ENV = {"PARKED_SWEEP_INTERVAL_S": "5", "ENGAGEMENT_SWEEP_INTERVAL_S": "10", "INFLIGHT_RECONCILE_INTERVAL_S": "3"}


def settle(timeout: float = 180.0) -> None:
    """Wait for quiescence with no event left parked. Nothing here applies an event: the workers
    unpark by themselves and the test's beat process (`BEAT_ENV`) sweeps, as in production."""
    deadline = time.monotonic() + timeout
    while True:
        # At least 5 s, so that past the deadline a quiet pipeline still gets to say what is parked.
        wait_for_quiescence(timeout=max(5.0, deadline - time.monotonic()), stable_s=1.5)
        parked = list(InboundEvent.objects.filter(status="parked").values_list("idempotency_key", flat=True)[:5])
        if not parked:
            wait_for_quiescence(timeout=max(5.0, deadline - time.monotonic()), stable_s=1.0)
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"events still parked after {timeout}s (is beat running?): {parked}")
        time.sleep(0.5)


def assert_invariants(stream: Stream, *, deliveries: int | None = None) -> None:
    """Every event exactly one applied inbox row; effects counted exactly; BullMQ and Celery empty."""
    rows = InboundEvent.objects.filter(idempotency_key__startswith=f"{stream.prefix}-")
    statuses = dict(rows.values_list("idempotency_key", "status"))
    assert sorted(statuses) == sorted(stream.keys), "one inbox row per produced event, none extra"
    assert set(statuses.values()) == {"applied"}, {k: s for k, s in statuses.items() if s != "applied"}
    if deliveries is not None:
        other = rows.exclude(deliveries=deliveries).values_list("idempotency_key", "deliveries", "attempts")
        assert not other, f"(key, deliveries, attempts) other than {deliveries} deliveries: {list(other[:10])}"

    n = stream.contacts
    profiles = Profile.objects.filter(contact_links__messaging_contact_id__startswith=f"{stream.prefix}-")
    assert profiles.count() == n
    assert ContactLink.objects.filter(messaging_contact_id__startswith=f"{stream.prefix}-").count() == n
    activities = Activity.objects.filter(profile__in=profiles)
    for activity_type in (ActivityType.MESSAGE_SENT, ActivityType.MESSAGE_DELIVERED, ActivityType.EMAIL_OPENED):
        assert activities.filter(type=activity_type).count() == n, activity_type
    assert activities.filter(type=ActivityType.CONSENT_OPTED_IN).count() == n  # emailOptIn: true
    assert activities.filter(type=ActivityType.CONSENT_OPTED_OUT).count() == n  # smsOptIn: false
    interactions = CampaignInteraction.objects.filter(message_id__startswith=f"{stream.prefix}-")
    for interaction_type in (InteractionType.SENT, InteractionType.DELIVERED, InteractionType.OPENED):
        typed = interactions.filter(type=interaction_type)
        assert typed.count() == n and set(typed.values_list("count", flat=True)) == {1}, interaction_type

    counts = bullmq_counts()
    assert counts["waiting"] == 0 and counts["active"] == 0 and counts["failed"] == 0, counts
    # Beat's periodic tasks (every few seconds here) pass through the queues and `unacked` for a few ms each:
    # a batch left behind stays, so the queues must be seen empty, not be empty at one chosen instant.
    wait_until(
        lambda: not any(celery_queue_depths().values()), 15, interval=0.05, message=lambda: str(celery_queue_depths())
    )


def applied_count(prefix: str) -> int:
    return InboundEvent.objects.filter(idempotency_key__startswith=f"{prefix}-", status="applied").count()


def report(scenario: str, **figures: object) -> None:
    """Record a scenario's measured figures (docs/reliability.md quotes them)."""
    line = json.dumps({"scenario": scenario, **figures})
    print(f"\nRELIABILITY {line}")
    path = Path(os.environ.get("STACK_DIR", ROOT / ".dev" / "test")) / "reliability.jsonl"
    with path.open("a") as out:
        out.write(line + "\n")


def _stack(*commands: str) -> None:
    env = {**os.environ, "REDIS_PORT": str(connection_port(settings.CELERY_BROKER_URL))}
    env["PG_PORT"] = str(connection.settings_dict["PORT"])
    script = f"source {ROOT}/scripts/stack.sh; " + "; ".join(commands)
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=120, capture_output=True)


def connection_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def restart_redis(down_for_s: float) -> None:
    """Shut the test Redis down (AOF is fsynced on shutdown), keep it down, start it on the same data."""
    _stack("redis-cli -h 127.0.0.1 -p $REDIS_PORT shutdown >/dev/null 2>&1 || true")
    time.sleep(down_for_s)
    _stack("start_redis")


def restart_postgres(down_for_s: float) -> None:
    connection.close()
    _stack("stop_postgres")
    time.sleep(down_for_s)
    _stack("start_postgres")
    connection.close()
