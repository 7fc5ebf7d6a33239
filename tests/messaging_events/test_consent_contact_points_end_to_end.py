"""Consent follows the contact point, and a future occurred-at is ordered at its receipt, through the
real path: jobs published with the real Node BullMQ client (job timestamps set with `opts.timestamp`),
carried by the real bridge to a real Celery worker (issue 11 §2 and §7)."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from crm.models import ConsentChange, MarketingConsent, Profile
from crm.services.export import profile_export
from messaging_events.models import InboundEvent
from tests.messaging_events.samples import contact_job, message_job
from tests.processes import Processes, publish_jobs, wait_for_quiescence

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]

TENANT = "t-points"
START = (timezone.now() - timedelta(hours=1)).replace(microsecond=0)  # job timestamps are in ms
BOB_PHONE, BEA_PHONE = "+27821110002", "+27821110004"


def _at(minutes: float):
    return START + timedelta(minutes=minutes)


def _ms(minutes: float) -> int:
    return int(_at(minutes).timestamp() * 1000)


def _contact(name: str, minutes: float, contact: str, **fields: Any) -> dict[str, Any]:
    job = contact_job(name, {"tenantId": TENANT, "contactId": contact, **fields})
    return {**job, "opts": {"timestamp": _ms(minutes)}}


def _publish_and_settle(jobs: list[dict[str, Any]]) -> None:
    before = InboundEvent.objects.count()
    publish_jobs(jobs)
    wait_for_quiescence(timeout=60, min_inbox_rows=before + len(jobs))


def test_two_contacts_sharing_a_mailbox_keep_their_own_sms_consent(processes: Processes) -> None:
    processes.start_bridge()
    processes.start_worker()
    # Bob and Bea share one mailbox, so identity resolution puts them on one profile; Bea's SMS
    # opt-ins are about her phone, never Bob's.
    _publish_and_settle(
        [
            _contact(
                "contact.created",
                0,
                "c-bob",
                email="bob@example.com",
                phoneNumber=BOB_PHONE,
                smsOptIn=False,
                emailOptIn=True,
            ),
        ]
    )
    _publish_and_settle(
        [
            _contact("contact.created", 1, "c-bea", email="bob@example.com", phoneNumber=BEA_PHONE, smsOptIn=True),
            _contact("contactPreference.updated", 2, "c-bea", smsOptIn=True),
        ]
    )
    profile = Profile.objects.get()
    assert (profile.phone, profile.sms_opt_in, profile.email_opt_in) == (BOB_PHONE, False, True)
    assert sorted(
        ConsentChange.objects.filter(channel="sms").values_list("contact_id", "address", "address_stated", "superseded")
    ) == [
        ("c-bea", BEA_PHONE, False, True),
        ("c-bea", BEA_PHONE, True, True),
        ("c-bob", BOB_PHONE, True, False),
    ]
    assert MarketingConsent.objects.get(channel="sms").address == BOB_PHONE

    # Bob's STOP claims to have happened half a day after the pipeline received it (a skewed clock);
    # his opt-in published after that receipt is his latest choice.
    stop = message_job(
        "sms.replied", {"eventId": "stop-1", "replyText": "STOP", "repliedAt": _at(60 * 12).isoformat()}, "c-bob"
    )
    _publish_and_settle([{**stop, "opts": {"timestamp": _ms(3)}}])
    _publish_and_settle([_contact("contactPreference.updated", 4, "c-bob", smsOptIn=True)])
    profile.refresh_from_db()
    assert profile.sms_opt_in is True
    stop_row = ConsentChange.objects.get(source="sms_keyword")
    assert (stop_row.address, stop_row.occurred_at, stop_row.received_at) == (BOB_PHONE, _at(60 * 12), _at(3))
    assert "later than its receipt" in stop_row.warning

    exported = profile_export(tenant_external_id=TENANT, contact_id="c-bea")
    assert exported["consent"]["sms"] | {"changed_at": None} == {
        "address": BOB_PHONE,
        "opted_in": True,
        "changed_at": None,
        "source": "messaging_event",
    }
    assert {(row["messaging_contact_id"], row["address"]) for row in exported["consent_history"]} >= {
        ("c-bea", BEA_PHONE),
        ("c-bob", BOB_PHONE),
        ("c-bob", "bob@example.com"),
    }
    assert [row["warning"] is not None for row in exported["consent_history"] if row["source"] == "sms_keyword"] == [
        True
    ]
