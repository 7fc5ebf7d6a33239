"""THE contract test: every seed event type, in both job shapes, plus malformed jobs, published with
the real Node BullMQ client to a real Redis, carried by the real bridge to a real Celery worker,
and recorded in the inbox with the right status."""

from collections import Counter

import pytest

from crm.models import (
    Activity,
    ActivityType,
    AttributionEvent,
    CampaignInteraction,
    ConsentChange,
    ContactLink,
    HardBounce,
    InteractionType,
    Profile,
    Tenant,
)
from messaging_events.models import InboundEvent
from tests.messaging_events.samples import (
    CONTACT,
    TENANT,
    contact_job,
    contact_payloads,
    message_job,
    message_payloads,
    seed_jobs,
)
from tests.processes import (
    Processes,
    bullmq_counts,
    celery_queue_depths,
    publish_jobs,
    wait_for_quiescence,
    wait_until,
)

GHOST = "contact_never_seen"
MAX_JOB_BYTES = 4096

MALFORMED = {
    "unknown name": (
        {"name": "contact.merged", "data": {"payload": {"eventId": "m1", "tenantId": TENANT, "contactId": CONTACT}}},
        "unknown event type 'contact.merged'",
    ),
    "data is a string": (
        {"name": "contact.created", "data": "not an object"},
        "job data must be a JSON object, got str",
    ),
    "missing payload": (
        {"name": "message.sent", "data": {"type": "message.sent", "identity": {"messagingContactId": CONTACT}}},
        "job data has no `payload` object",
    ),
    "opt-in flag not a boolean": (
        contact_job("contact.updated", {**contact_payloads(prefix="bad")["contact.updated"], "smsOptIn": "yes"}),
        "payload.smsOptIn: Input should be a valid boolean",
    ),
    "type and name disagree": (
        {**message_job("message.sent", message_payloads(message="msg_x")["message.sent"]), "name": "message.failed"},
        "job name 'message.failed' and data.type 'message.sent' disagree",
    ),
    "oversized": (
        contact_job("contact.updated", {**contact_payloads(prefix="big")["contact.updated"], "bio": "x" * 10_000}),
        f"the limit is {MAX_JOB_BYTES} (BRIDGE_MAX_JOB_BYTES)",
    ),
}


@pytest.mark.processes
def test_every_event_type_in_both_shapes_and_malformed_jobs_end_in_the_inbox(processes: Processes) -> None:
    known = seed_jobs()  # the known contact: contact.created links it
    envelope = [
        message_job("contactPreference.updated", contact_payloads(prefix="env")["contactPreference.updated"]),
        {
            **contact_job("contact.updated", contact_payloads(prefix="pre")["contact.updated"]),
            "name": "messaging.contact.updated",
        },
        message_job("email.opened", message_payloads(message="msg_t")["email.opened"], tenant=TENANT),
    ]
    ghost = [message_job(name, payload, contact=GHOST) for name, payload in message_payloads(GHOST, "msg_g").items()]
    malformed = [job for job, _ in MALFORMED.values()]
    jobs = known + envelope + ghost + malformed

    processes.start_bridge(env={"BRIDGE_MAX_JOB_BYTES": str(MAX_JOB_BYTES)}, wait=False)
    processes.start_worker(concurrency=2, wait=False)
    processes.wait_ready()
    ids = publish_jobs(jobs, ids=True)
    by_job = dict(zip(ids, jobs, strict=True))

    wait_for_quiescence(timeout=60, min_inbox_rows=len(jobs))

    rows = {row.bullmq_job_id: row for row in InboundEvent.objects.all()}
    assert sorted(rows) == sorted(ids), "every job has exactly one inbox row"

    def status_of(job_id: str) -> str:
        return InboundEvent.objects.get(bullmq_job_id=job_id).status

    # Message events that overtook contact.created were parked, then re-applied once it linked the contact.
    known_ids = ids[: len(known) + len(envelope)]
    wait_until(
        lambda: all(status_of(i) in ("applied", "ignored") for i in known_ids),
        20,
        message=lambda: {by_job[i]["name"]: (status_of(i), rows[i].error) for i in known_ids},
    )
    rows = {row.bullmq_job_id: row for row in InboundEvent.objects.all()}
    tenant = Tenant.objects.get(external_id=TENANT)

    for job_id in known_ids:
        job, row = by_job[job_id], rows[job_id]
        expected = "ignored" if job["name"] == "contact.deleted" else "applied"
        assert row.status == expected, (job["name"], row.status, row.error)
        assert row.event_type == job["name"].removeprefix("messaging.")
        assert row.job_name == job["name"]
        assert row.raw_data == job["data"]
        assert row.messaging_contact_id == CONTACT
        assert row.occurred_at is not None
        assert row.job_timestamp is not None
        assert row.deliveries == 1
        if expected == "applied":
            assert row.tenant_id == tenant.pk  # stated, or (message events) from the contact's link
            assert row.applied_at is not None
    assert ContactLink.objects.get(messaging_contact_id=CONTACT).tenant_id == tenant.pk

    # Idempotency keys: the eventId for contact events, a content hash for message events.
    assert rows[ids[0]].idempotency_key == "evt_123"
    assert rows[ids[4]].idempotency_key.startswith("sha256:")
    # Contact events carry no time: their occurred-at is the job's timestamp.
    assert rows[ids[0]].occurred_at == rows[ids[0]].job_timestamp

    for job_id in ids[len(known) + len(envelope) : len(known) + len(envelope) + len(ghost)]:
        row = rows[job_id]
        assert row.status == "parked", (row.event_type, row.status, row.error)
        assert row.messaging_contact_id == GHOST
        assert GHOST in row.error
        assert row.applied_at is None

    for (label, (_, reason)), job_id in zip(MALFORMED.items(), ids[-len(malformed) :], strict=True):
        row = rows[job_id]
        assert row.status == "rejected", (label, row.status, row.error)
        assert reason in row.error, (label, row.error)
        assert row.applied_at is None
    oversized = rows[ids[-1]]
    assert oversized.raw_data["_oversized"]["bytes"] > 10_000
    assert oversized.idempotency_key == "big_124"

    # Priorities as routed.
    assert rows[ids[2]].priority == "high"  # contactPreference.updated
    assert rows[ids[5]].priority == "low"  # message.delivered

    # The CRM rows the known contact's events imply; none for the ghost or the malformed jobs.
    profile = Profile.objects.get()
    assert (profile.tenant_id, profile.email, profile.phone) == (tenant.pk, "john@example.com", "+27821234567")
    assert profile.email_opt_in is True  # one hard bounce is below the opt-out threshold
    assert profile.email_verified is False  # message.failed with reason invalid_email
    # (Their campaign is not compared: a non-SENT row applied concurrently with its SENT can miss it,
    # see test_concurrent_claims.py::test_a_delivery_applied_while_its_send_commits_gets_the_campaign.)
    interactions = sorted(CampaignInteraction.objects.values_list("message_id", "type", "count"))
    assert interactions == sorted(
        [("msg_789", kind, 1) for kind in InteractionType.values] + [("msg_t", InteractionType.OPENED, 1)]
    )
    activities = Counter(Activity.objects.filter(profile=profile).values_list("type", flat=True))
    assert {kind: n for kind, n in activities.items() if not kind.startswith(("CONSENT_", "PROFILE_"))} == {
        ActivityType.MESSAGE_SENT: 1,
        ActivityType.MESSAGE_DELIVERED: 1,
        ActivityType.MESSAGE_FAILED: 1,
        ActivityType.MESSAGE_BOUNCED: 1,
        ActivityType.EMAIL_OPENED: 2,
        ActivityType.EMAIL_CLICKED: 1,
        ActivityType.SMS_REPLIED: 1,
    }
    # Two statements from contact.created and one from each preference change; contact.updated states
    # no consent (its flags are only reported: docs/decisions.md).
    assert ConsentChange.objects.filter(profile=profile).count() == 4
    assert list(HardBounce.objects.values_list("profile_id", "message_id")) == [(profile.pk, "msg_789")]
    assert list(AttributionEvent.objects.values_list("profile_id", "campaign_id", "link_id")) == [
        (profile.pk, "campaign_dec_2025", "link_123")
    ]
    assert not ContactLink.objects.filter(messaging_contact_id=GHOST).exists()

    counts = bullmq_counts()
    assert counts == {"waiting": 0, "active": 0, "delayed": 0, "completed": len(jobs), "failed": 0}, counts
    assert celery_queue_depths() == {"high": 0, "normal": 0, "low": 0, "unacked": 0}
