"""Security through the real pipeline: tenants stay apart, and logs carry ids, never personal data."""

import phonenumbers
import pytest
from django.apps import apps

from crm.models import PendingScoreRefresh, Profile, Tenant
from messaging_events.models import InboundEvent
from tests.factories import (
    contact_created_job,
    contact_deleted_job,
    contact_preference_updated_job,
    contact_updated_job,
    email_opened_job,
    message_sent_job,
)
from tests.processes import Processes, publish_jobs, worker_command
from tests.reliability.stream import BEAT_ENV, TENANT, assert_invariants, known_stream, settle

pytestmark = [pytest.mark.processes, pytest.mark.timeout(300)]


def _crm_snapshot() -> dict[str, object]:
    """Every CRM row, both tenants: model → sorted rows of all their field values (tenant rows aside)."""
    snapshot: dict[str, object] = {}
    for model in apps.get_app_config("crm").get_models():
        if model in (Tenant, PendingScoreRefresh):  # a tenant row, and the score-refresh work queue
            continue
        rows = model.objects.order_by("pk").values_list(*[f.attname for f in model._meta.concrete_fields])
        snapshot[model.__name__] = [tuple(map(str, row)) for row in rows]
    return snapshot


def test_an_event_naming_another_tenant_for_a_linked_contact_changes_nothing(processes: Processes) -> None:
    stream = known_stream("ti", 3)
    processes.start_worker(wait=False)
    processes.start_beat(env=BEAT_ENV, wait=False)
    processes.start_bridge(wait=False)
    processes.wait_ready()
    publish_jobs(stream.jobs)
    settle()
    assert_invariants(stream)
    before = _crm_snapshot()

    other = "t-other"
    intruders = [
        message_sent_job(contact_id="ti-c0", message_id="ti-intruder", tenant_id=other, event_id="xt-sent"),
        email_opened_job(contact_id="ti-c0", message_id="ti-m0", tenant_id=other, event_id="xt-opened"),
        contact_preference_updated_job(contact_id="ti-c0", tenant_id=other, event_id="xt-pref", email_opt_in=False),
        contact_updated_job(
            contact_id="ti-c1", tenant_id=other, event_id="xt-update", email="intruder@example.com", first_name="X"
        ),
        contact_deleted_job(contact_id="ti-c2", tenant_id=other, event_id="xt-delete"),
    ]
    publish_jobs([{"name": job["name"], "data": job["data"]} for job in intruders])
    settle()

    for job in intruders[:-1]:
        row = InboundEvent.objects.get(idempotency_key=job["data"]["payload"]["eventId"])
        assert row.status == "rejected" and "another tenant" in row.error, (row.event_type, row.status, row.error)
    # contact.deleted is reserved by the contract: ignored for every tenant (the snapshot proves it).
    assert InboundEvent.objects.get(idempotency_key="xt-delete").status == "ignored"
    assert _crm_snapshot() == before, "no CRM row changed in either tenant"
    assert not Profile.objects.filter(tenant__external_id=other).exists()
    # Rejected events never create tenants (docs/decisions.md); the reserved contact.deleted creates nothing.
    assert list(Tenant.objects.values_list("external_id", flat=True)) == [TENANT]
    assert_invariants(stream)


def _forms(email: str, phone: str) -> set[str]:
    """The spellings a leak could take: as sent, normalised, E.164, digits only, national, international."""
    number = phonenumbers.parse(phone, "ZA")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return {
        email,
        email.lower(),
        email.upper(),
        email.split("@")[0] + "@",
        phone,
        e164,
        e164.lstrip("+"),
        "".join(ch for ch in phone if ch.isdigit()),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL).replace(" ", ""),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
    }


def _raw_spellings() -> tuple[list[dict], list[tuple[str, str]]]:
    """Contacts created with raw spellings a producer might send (national numbers with spaces,
    mixed-case emails), then updated to new addresses; and one phone number the contract refuses."""
    jobs, people = [], []
    for i in range(5):
        email, phone = f"Raw.Person{i}@Example.COM", f"082 555 {i:04d}"
        new_email, new_phone = f"raw.changed{i}@example.org", f"+27 83 555 {i:04d}"
        people += [(email, phone), (new_email, new_phone)]
        jobs.append(
            contact_created_job(
                contact_id=f"raw-c{i}", tenant_id=TENANT, event_id=f"raw-created-{i}", email=email, phone=phone
            )
        )
        jobs.append(
            contact_updated_job(
                contact_id=f"raw-c{i}", tenant_id=TENANT, event_id=f"raw-updated-{i}", email=new_email, phone=new_phone
            )
        )
    jobs.append(contact_updated_job(contact_id="raw-c0", tenant_id=TENANT, event_id="bad-phone", phone="+27 82 99"))
    return [{"name": job["name"], "data": job["data"]} for job in jobs], people


def test_logs_of_a_full_run_never_contain_emails_or_phone_numbers(processes: Processes) -> None:
    stream = known_stream("pii", 30)
    bad_email = {
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
    # Partial acceptance applies the two events above without their bad address (a warning on the row);
    # a consent flag that is not a boolean still rejects, here one that quotes an address.
    bad_flag = {
        "name": "contact.created",
        "data": {
            "payload": {"eventId": "bad-flag", "tenantId": TENANT, "contactId": "bad-flag", "smsOptIn": "pii.flag@x"}
        },
    }
    raw_jobs, raw_people = _raw_spellings()
    # Everything at DEBUG: the worker's root logger follows --loglevel, the bridge's LOG_LEVEL.
    args = ["--loglevel=DEBUG" if arg == "--loglevel=INFO" else arg for arg in worker_command()]
    worker = processes.start("worker", args, {"LOG_LEVEL": "DEBUG"}, ready_marker=" ready.")
    processes.start_beat(env=BEAT_ENV, wait=False)
    bridge = processes.start_bridge(env={"LOG_LEVEL": "DEBUG", "BRIDGE_STATS_INTERVAL_S": "1"}, wait=False)
    processes.wait_ready()
    publish_jobs([*stream.jobs, bad_email, bad_flag])
    publish_jobs(raw_jobs)
    settle()
    assert_invariants(stream)
    for key, field in (("bad-pii", "payload.email"), ("bad-phone", "payload.phoneNumber")):
        row = InboundEvent.objects.get(idempotency_key=key)
        assert (row.status, [w["field"] for w in row.warnings]) == ("applied", [field])
    assert InboundEvent.objects.get(idempotency_key="bad-flag").status == "rejected"
    raw_keys = [job["data"]["payload"]["eventId"] for job in raw_jobs[:-1]]
    assert set(InboundEvent.objects.filter(idempotency_key__in=raw_keys).values_list("status", flat=True)) == {
        "applied"
    }

    logs = bridge.output() + worker.output()
    assert "event_applied" in logs and "event_rejected" in logs, "the run really was logged"
    assert " DEBUG " in bridge.output() and " DEBUG " in worker.output(), "both logged at DEBUG"
    people = [*zip(stream.emails, stream.phones, strict=True), *raw_people]
    leaked = sorted(form for email, phone in people for form in _forms(email, phone) if form in logs)
    assert not leaked, f"personal data in the logs: {leaked[:5]}"
    for refused in ("pii.bad@", "+27 82 99", "pii.flag@"):
        assert refused not in logs
