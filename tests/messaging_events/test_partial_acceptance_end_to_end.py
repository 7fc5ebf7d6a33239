"""Partial acceptance through the real path: a `contact.created` with an empty phone number and an
over-long name, published with the real Node BullMQ client and carried by the real bridge to a real
Celery worker, links its contact and applies its consent; the contact's later message events apply
instead of parking; the dropped values are warnings on the inbox rows."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from crm.models import CampaignInteraction, ContactLink, InteractionType, MarketingConsent, Profile
from messaging_events.models import InboundEvent
from messaging_events.services.status import bridge_status_get
from tests.messaging_events.samples import contact_job, message_job
from tests.processes import Processes, publish_jobs, wait_for_quiescence

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]

TENANT = "t-partial"
CONTACT = "c-partial"
START = timezone.now() - timedelta(hours=1)


def _publish_and_settle(jobs: list[dict[str, Any]]) -> None:
    before = InboundEvent.objects.count()
    publish_jobs(jobs)
    wait_for_quiescence(timeout=60, min_inbox_rows=before + len(jobs))


def test_a_contact_with_an_empty_phone_and_an_overlong_name_is_linked_and_its_messages_apply(
    processes: Processes,
) -> None:
    processes.start_bridge()
    processes.start_worker()
    created = contact_job(
        "contact.created",
        {
            "eventId": "pa-created",
            "tenantId": TENANT,
            "contactId": CONTACT,
            "email": "pat@example.com",
            "phoneNumber": "",
            "firstName": "P" * 300,
            "lastName": "Doe",
            "emailOptIn": True,
        },
    )
    _publish_and_settle([{**created, "opts": {"timestamp": int(START.timestamp() * 1000)}}])

    row = InboundEvent.objects.get(idempotency_key="pa-created")
    assert (row.status, row.event_type) == ("applied", "contact.created")
    assert [(w["field"], w["problem"]) for w in row.warnings] == [
        ("payload.phoneNumber", "must not be empty; dropped"),
        ("payload.firstName", "String should have at most 200 characters; dropped"),
    ]
    assert row.raw_data == created["data"]  # the inbox keeps what was sent, whole
    profile = Profile.objects.get()
    assert (profile.email, profile.phone, profile.first_name, profile.last_name) == ("pat@example.com", "", "", "Doe")
    link = ContactLink.objects.get(messaging_contact_id=CONTACT)
    assert (link.profile_id, link.tenant.external_id) == (profile.pk, TENANT)
    assert profile.email_opt_in is True
    assert list(MarketingConsent.objects.values_list("profile_id", "channel", "opted_in")) == [
        (profile.pk, "email", True)
    ]

    sent_at = START + timedelta(minutes=5)
    sent = message_job(
        "message.sent",
        {
            "eventId": "pa-sent",
            "messageId": "pa-msg",
            "contactId": CONTACT,
            "channel": "EMAIL",
            "campaignId": "pa-campaign",
            "sentAt": sent_at.isoformat(),
        },
        CONTACT,
    )
    # A zone-less time, as a producer serialising naive UTC datetimes sends it: read as UTC, with a warning.
    opened_at = (START + timedelta(minutes=9)).replace(tzinfo=None).isoformat()
    opened = message_job(
        "email.opened", {"eventId": "pa-opened", "messageId": "pa-msg", "openedAt": opened_at}, CONTACT
    )
    _publish_and_settle([sent, opened])

    rows = {r.idempotency_key: r for r in InboundEvent.objects.filter(idempotency_key__in=["pa-sent", "pa-opened"])}
    assert {k: (r.status, r.tenant_id) for k, r in rows.items()} == {
        "pa-sent": ("applied", link.tenant_id),
        "pa-opened": ("applied", link.tenant_id),
    }
    assert rows["pa-sent"].warnings == []
    assert rows["pa-opened"].warnings == [
        {"field": "payload.openedAt", "problem": "has no time zone; read as UTC", "value": f'"{opened_at}"'}
    ]
    assert rows["pa-opened"].occurred_at == START + timedelta(minutes=9)
    interactions = dict(
        CampaignInteraction.objects.filter(profile=profile, message_id="pa-msg").values_list("type", "first_at")
    )
    assert interactions == {InteractionType.SENT: sent_at, InteractionType.OPENED: START + timedelta(minutes=9)}

    status = bridge_status_get()
    assert status.applied_with_warnings == 2
    assert status.bullmq["failed"] == 0
    assert not [p for p in status.problems if "warning" in p]
