"""Consent and event identity through the real path: jobs published with the real Node BullMQ client
(job timestamps set with `opts.timestamp`, as the Messaging service's clock sets them), carried by the
real bridge to a real Celery worker."""

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crm.models import ConsentChange, Profile, Tenant
from messaging_events.models import ConflictState, InboundEvent
from messaging_events.services.conflicts import Resolution, conflict_resolve
from messaging_events.services.status import bridge_status_get
from tests.messaging_events.samples import contact_job, message_job
from tests.processes import Processes, publish_jobs, wait_for_quiescence, wait_until

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]

TENANT = "t-consent"
CONTACT = "c-consent"
START = timezone.now() - timedelta(hours=1)


def _ms(minutes: float) -> int:
    return int((START + timedelta(minutes=minutes)).timestamp() * 1000)


def _contact(name: str, minutes: float, **fields: Any) -> dict[str, Any]:
    job = contact_job(name, {"tenantId": TENANT, "contactId": CONTACT, **fields})
    return {**job, "opts": {"timestamp": _ms(minutes)}}


def _publish_and_settle(jobs: list[dict[str, Any]], *, new_rows: int | None = None) -> None:
    before = InboundEvent.objects.count()
    publish_jobs(jobs)
    wait_for_quiescence(timeout=60, min_inbox_rows=before + (len(jobs) if new_rows is None else new_rows))


def test_contact_updated_never_reverses_a_stop_and_the_profile_page_shows_the_report(processes: Processes) -> None:
    processes.start_bridge(wait=False)
    processes.start_worker(wait=False)
    processes.wait_ready()
    _publish_and_settle(
        [_contact("contact.created", 0, eventId="cc-1", email="ann@example.com", smsOptIn=True, emailOptIn=True)]
    )
    reply_at = (START + timedelta(minutes=5)).isoformat()
    _publish_and_settle(
        [message_job("sms.replied", {"eventId": "stop-1", "replyText": "STOP", "repliedAt": reply_at}, CONTACT)]
    )
    assert Profile.objects.get().sms_opt_in is False
    _publish_and_settle(
        [_contact("contact.updated", 10, eventId="cu-1", firstName="Annie", smsOptIn=True, emailOptIn=True)]
    )

    assert dict(InboundEvent.objects.values_list("idempotency_key", "status")) == {
        "cc-1": "applied",
        "stop-1": "applied",
        "cu-1": "applied",
    }
    profile = Profile.objects.get()
    assert (profile.sms_opt_in, profile.email_opt_in) == (False, True)
    assert profile.consent_reports["sms"]["opted_in"] is True
    assert ConsentChange.objects.filter(source_event__idempotency_key="cu-1").count() == 0

    admin = get_user_model().objects.create_superuser("root", password="x")
    client = Client()
    client.force_login(admin)
    page = client.get(reverse("admin:crm_profile_change", args=[profile.pk])).content.decode()
    assert f"Messaging reports smsOptIn=true since {profile.consent_reports['sms']['at']}" in page
    assert "emailOptIn" not in page  # it agrees with the CRM


def test_identity_without_event_ids_across_types_and_conflicts_resolved_by_replay(processes: Processes) -> None:
    processes.start_bridge(wait=False)
    processes.start_worker(wait=False)
    processes.wait_ready()
    _publish_and_settle([_contact("contact.created", 0, eventId="cc-2", email="bo@example.com", smsOptIn=True)])
    # Opt-out, opt-in, opt-out without eventIds: the first and third payloads are identical.
    _publish_and_settle(
        [
            _contact("contactPreference.updated", 1, smsOptIn=False),
            _contact("contactPreference.updated", 2, smsOptIn=True),
            _contact("contactPreference.updated", 3, smsOptIn=False),
            _contact("contact.deleted", 4, eventId="cc-2"),  # the eventId of contact.created, reused
            _contact("contactPreference.updated", 5, eventId="p-9", emailOptIn=False),
        ]
    )
    _publish_and_settle([_contact("contactPreference.updated", 6, eventId="p-9", emailOptIn=True)], new_rows=0)

    preferences = InboundEvent.objects.filter(
        event_type="contactPreference.updated", idempotency_key__startswith="sha256:"
    )
    assert list(preferences.values_list("status", flat=True)) == ["applied"] * 3
    deleted = InboundEvent.objects.get(event_type="contact.deleted")
    assert (deleted.idempotency_key, deleted.status) == ("cc-2", "ignored")
    assert deleted.tenant == Tenant.objects.get(external_id=TENANT)
    profile = Profile.objects.get()
    assert (profile.sms_opt_in, profile.email_opt_in) == (False, False)

    conflicted = InboundEvent.objects.get(idempotency_key="p-9")
    assert conflicted.conflict == ConflictState.OPEN and conflicted.deliveries == 2
    assert conflicted.raw_data["payload"]["emailOptIn"] is False
    assert conflicted.conflict_data["payload"]["emailOptIn"] is True
    assert bridge_status_get().open_conflicts == 1 and not bridge_status_get().healthy

    resolution = conflict_resolve(row_id=conflicted.pk)
    assert resolution.resolution == Resolution.REPLAYED
    replayed = wait_until(
        lambda: InboundEvent.objects.filter(idempotency_key=resolution.replay_key, status="applied").first(), 30
    )
    assert replayed.raw_data == conflicted.conflict_data
    profile.refresh_from_db()
    assert profile.email_opt_in is True
    conflicted.refresh_from_db()
    assert conflicted.conflict == ConflictState.RESOLVED
    assert bridge_status_get().open_conflicts == 0
