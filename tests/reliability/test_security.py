"""Security through the real pipeline: tenants stay apart, and logs carry ids, never personal data."""

import phonenumbers
import pytest

from crm.models import Activity, CampaignInteraction, ConsentChange, Profile, Tenant
from messaging_events.models import InboundEvent
from tests.factories import contact_preference_updated_job, message_sent_job
from tests.processes import Processes, publish_jobs
from tests.reliability.stream import TENANT, assert_invariants, known_stream, settle

pytestmark = [pytest.mark.processes, pytest.mark.timeout(300)]


def test_an_event_naming_another_tenant_for_a_linked_contact_changes_nothing(processes: Processes) -> None:
    stream = known_stream("ti", 3)
    processes.start_worker()
    processes.start_bridge()
    publish_jobs(stream.jobs)
    settle()
    profile = Profile.objects.get(contact_links__messaging_contact_id="ti-c0")
    before = {
        "activities": Activity.objects.filter(profile=profile).count(),
        "interactions": CampaignInteraction.objects.filter(profile=profile).count(),
        "ledger": ConsentChange.objects.filter(profile=profile).count(),
        "email_opt_in": profile.email_opt_in,
    }

    intruders = [
        message_sent_job(contact_id="ti-c0", message_id="ti-intruder", tenant_id="t-other", event_id="ti-x-sent"),
        contact_preference_updated_job(
            contact_id="ti-c0", tenant_id="t-other", event_id="ti-x-pref", email_opt_in=False
        ),
    ]
    publish_jobs([{"name": job["name"], "data": job["data"]} for job in intruders])
    settle()

    for key in ("ti-x-sent", "ti-x-pref"):
        row = InboundEvent.objects.get(idempotency_key=key)
        assert row.status == "rejected" and "another tenant" in row.error
    profile.refresh_from_db()
    after = {
        "activities": Activity.objects.filter(profile=profile).count(),
        "interactions": CampaignInteraction.objects.filter(profile=profile).count(),
        "ledger": ConsentChange.objects.filter(profile=profile).count(),
        "email_opt_in": profile.email_opt_in,
    }
    assert after == before
    assert not Profile.objects.filter(tenant__external_id="t-other").exists()
    assert list(Tenant.objects.values_list("external_id", flat=True)) in ([TENANT], [TENANT, "t-other"])
    assert not CampaignInteraction.objects.filter(message_id="ti-intruder").exists()


def _forms(email: str, phone: str) -> set[str]:
    number = phonenumbers.parse(phone, "ZA")
    return {
        email,
        email.upper(),
        email.split("@")[0] + "@",
        phone,
        phone.lstrip("+"),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL).replace(" ", ""),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
    }


def test_logs_of_a_full_run_never_contain_emails_or_phone_numbers(processes: Processes) -> None:
    stream = known_stream("pii", 30)
    bad = {
        "name": "contact.created",
        "data": {
            "payload": {
                "eventId": "bad-pii",
                "tenantId": TENANT,
                "contactId": "bad-pii",
                "email": "pii.bad@@example.com",
            }
        },
    }
    worker = processes.start_worker(env={"LOG_LEVEL": "INFO"})
    bridge = processes.start_bridge(env={"LOG_LEVEL": "DEBUG", "BRIDGE_STATS_INTERVAL_S": "1"})
    publish_jobs([*stream.jobs, bad])
    settle()
    assert_invariants(stream)
    assert InboundEvent.objects.get(idempotency_key="bad-pii").status == "rejected"

    logs = bridge.output() + worker.output()
    assert "event_applied" in logs and "event_rejected" in logs, "the run really was logged"
    leaked = sorted(
        form
        for email, phone in zip(stream.emails, stream.phones, strict=True)
        for form in _forms(email, phone)
        if form in logs
    )
    assert not leaked, f"personal data in the logs: {leaked[:5]}"
    assert "pii.bad@" not in logs
