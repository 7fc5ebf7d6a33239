"""Partial acceptance in the worker: an event with a bad optional field applies without it, and its
inbox row records the warnings in the same transaction, on the per-event path, the set-based batch
path and its fallback; redeliveries keep them and replays recompute the same."""

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from crm.models import Activity, ActivityType, CampaignInteraction, ContactLink, MarketingConsent, Profile
from messaging_events.models import InboundEvent
from messaging_events.services import batch_apply, inbox
from messaging_events.services.status import bridge_status_get
from messaging_events.streams.events import iso
from messaging_events.tasks import apply_event_batch
from tests.factories import (
    at,
    contact_created_job,
    contact_updated_job,
    email_opened_job,
    message_sent_job,
    process,
)

pytestmark = pytest.mark.django_db

LONG_NAME = "J" * 250
EMPTY_PHONE_AND_LONG_NAME = [
    {"field": "payload.phoneNumber", "problem": "must not be empty; dropped", "value": "empty string"},
    {
        "field": "payload.firstName",
        "problem": "String should have at most 200 characters; dropped",
        "value": '"' + "J" * 40 + '"... (250 characters)',
    },
]


def run_task(jobs: list[dict[str, Any]], **kwargs: Any) -> dict[str, int]:
    return apply_event_batch.apply(args=[jobs], kwargs=kwargs).get()


def created_with_bad_fields(contact_id: str = "c-partial", **changes: Any) -> dict[str, Any]:
    return contact_created_job(
        contact_id=contact_id,
        event_id=f"created-{contact_id}",
        email=f"{contact_id}@example.com",
        phone="",
        first_name=LONG_NAME,
        last_name="Smith",
        email_opt_in=True,
        **changes,
    )


def sent(contact_id: str, n: int, **payload_changes: Any) -> dict[str, Any]:
    job = message_sent_job(contact_id=contact_id, message_id=f"m-{contact_id}-{n}", event_id=f"s-{contact_id}-{n}")
    job["data"]["payload"].update(payload_changes)
    return job


def test_contact_created_applies_without_the_bad_fields_and_records_why() -> None:
    assert process(created_with_bad_fields()) == "applied"

    profile = Profile.objects.get()
    assert (profile.email, profile.phone, profile.first_name, profile.last_name) == (
        "c-partial@example.com",
        "",
        "",
        "Smith",
    )
    assert ContactLink.objects.get(messaging_contact_id="c-partial").profile_id == profile.pk
    assert profile.email_opt_in is True
    assert list(MarketingConsent.objects.values_list("channel", "opted_in")) == [("email", True)]
    row = InboundEvent.objects.get()
    assert (row.status, row.error, row.warnings) == ("applied", "created", EMPTY_PHONE_AND_LONG_NAME)
    assert row.applied_at is not None


def test_contact_updated_with_an_empty_email_keeps_the_profiles_email() -> None:
    process(contact_created_job(contact_id="c-upd", event_id="c1", email="kept@example.com", first_name=None))
    job = contact_updated_job(contact_id="c-upd", event_id="u1", email="", first_name="Ann", phone="12")
    assert process(job) == "applied"

    profile = Profile.objects.get()
    assert (profile.email, profile.first_name) == ("kept@example.com", "Ann")
    row = InboundEvent.objects.get(idempotency_key="u1")
    assert [(w["field"], w["problem"]) for w in row.warnings] == [
        ("payload.email", "must not be empty; dropped"),
        ("payload.phoneNumber", "is not a valid phone number; dropped"),
    ]


def test_a_consent_flag_of_the_wrong_type_still_rejects_and_changes_nothing() -> None:
    job = created_with_bad_fields()
    job["data"]["payload"]["smsOptIn"] = "true"
    assert process(job) == "rejected"
    row = InboundEvent.objects.get()
    assert "payload.smsOptIn" in row.error
    assert row.warnings == []
    assert not Profile.objects.exists() and not ContactLink.objects.exists()


def test_a_redelivery_keeps_the_warnings_and_a_replay_recomputes_the_same() -> None:
    job = created_with_bad_fields()
    assert run_task([job]) == {"applied": 1}
    assert run_task([job]) == {"applied": 1}  # a duplicate: nothing runs
    row = InboundEvent.objects.get()
    assert (row.deliveries, row.attempts, row.warnings) == (2, 1, EMPTY_PHONE_AND_LONG_NAME)

    # Warnings follow the row's last judgement: a stale list is replaced by what the data says.
    InboundEvent.objects.filter(pk=row.pk).update(status="failed", warnings=[{"field": "stale"}])
    assert run_task([inbox.job_from_row(InboundEvent.objects.get())], replay=True) == {"applied": 1}
    row.refresh_from_db()
    assert (row.status, row.warnings) == ("applied", EMPTY_PHONE_AND_LONG_NAME)
    assert Profile.objects.count() == 1


def test_a_parked_event_keeps_its_warnings_and_applies_with_them_once_its_contact_arrives() -> None:
    opened = email_opened_job(contact_id="c-late", event_id="o-late", device_type="d" * 600)
    assert run_task([opened]) == {"parked": 1}
    parked = InboundEvent.objects.get(idempotency_key="o-late")
    assert parked.status == "parked"
    assert [w["field"] for w in parked.warnings] == ["payload.deviceType"]

    run_task([created_with_bad_fields("c-late")])
    assert run_task([inbox.job_from_row(parked)], replay=True) == {"applied": 1}
    parked.refresh_from_db()
    assert parked.status == "applied"
    assert [w["field"] for w in parked.warnings] == ["payload.deviceType"]
    activity = Activity.objects.get(type=ActivityType.EMAIL_OPENED)
    assert activity.data["device_type"] == ""


def test_the_set_based_batch_stores_warnings_with_its_statuses() -> None:
    run_task([created_with_bad_fields("c-batch")])
    jobs = [
        sent("c-batch", 1, templateName="T" * 501, sentAt="2025-12-14T09:00:00"),  # zone-less: read as UTC
        sent("c-batch", 2, channel="VOICE", campaignId="has space"),
        sent("c-batch", 3),
    ]
    fallbacks = batch_apply.fallback_batches()
    assert run_task(jobs) == {"applied": 3}
    assert batch_apply.fallback_batches() == fallbacks, "applied set-based, not by the fallback"

    rows = {row.idempotency_key: row for row in InboundEvent.objects.filter(event_type="message.sent")}
    assert {k: r.status for k, r in rows.items()} == dict.fromkeys(
        ("s-c-batch-1", "s-c-batch-2", "s-c-batch-3"), "applied"
    )
    assert [(w["field"], w["problem"]) for w in rows["s-c-batch-1"].warnings] == [
        ("payload.templateName", "String should have at most 500 characters; dropped"),
        ("payload.sentAt", "has no time zone; read as UTC"),
    ]
    assert [w["field"] for w in rows["s-c-batch-2"].warnings] == ["payload.channel", "payload.campaignId"]
    assert rows["s-c-batch-3"].warnings == []
    assert rows["s-c-batch-1"].occurred_at == at(60)
    first = CampaignInteraction.objects.get(message_id="m-c-batch-1")
    assert (first.template_id, first.first_at) == ("template_123", at(60))
    second = CampaignInteraction.objects.get(message_id="m-c-batch-2")
    assert (second.channel, second.campaign_id) == ("", "")
    data = Activity.objects.get(type=ActivityType.MESSAGE_SENT, data__message_id="m-c-batch-1").data
    assert data["template_name"] == ""


def test_the_per_event_fallback_of_a_batch_stores_the_same_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    run_task([created_with_bad_fields("c-fb")])
    jobs = [sent("c-fb", 1, templateName="T" * 501), sent("c-fb", 2, channel="VOICE")]

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("the set-based statements failed")

    monkeypatch.setattr(batch_apply, "message_records_apply", broken)
    before = batch_apply.fallback_batches()
    assert run_task(jobs) == {"applied": 2}
    assert batch_apply.fallback_batches() == before + 1
    rows = dict(InboundEvent.objects.filter(event_type="message.sent").values_list("idempotency_key", "warnings"))
    assert {k: [w["field"] for w in v] for k, v in rows.items()} == {
        "s-c-fb-1": ["payload.templateName"],
        "s-c-fb-2": ["payload.channel"],
    }
    assert Activity.objects.get(data__message_id="m-c-fb-2").data["channel"] == ""


def test_a_dropped_occurred_at_applies_at_the_job_time() -> None:
    run_task([created_with_bad_fields("c-time")])
    job = sent("c-time", 1, sentAt="yesterday")
    assert run_task([job]) == {"applied": 1}
    row = InboundEvent.objects.get(event_type="message.sent")
    assert row.occurred_at == row.job_timestamp
    assert row.warnings == [
        {"field": "payload.sentAt", "problem": "must be an ISO 8601 timestamp; dropped", "value": '"yesterday"'}
    ]


def test_bridge_status_counts_applied_events_with_warnings_without_calling_them_a_problem() -> None:
    run_task([created_with_bad_fields("c-s1"), created_with_bad_fields("c-s2")])
    run_task([contact_created_job(contact_id="c-s3", event_id="clean")])
    run_task([email_opened_job(contact_id="c-nobody", event_id="o-parked", device_type="d" * 600)])  # parked

    status = bridge_status_get()
    assert status.applied_with_warnings == 2
    assert status.as_dict()["applied_with_warnings"] == 2
    assert not [p for p in status.problems if "warning" in p]


def test_the_admin_filters_on_warnings_and_shows_them(admin_client: Client) -> None:
    run_task([created_with_bad_fields("c-admin")])
    run_task([contact_created_job(contact_id="c-clean", event_id="clean")])
    changelist = reverse("admin:messaging_events_inboundevent_changelist")

    with_warnings = admin_client.get(changelist, {"warnings": "yes"}).content.decode()
    assert "created-c-ad" in with_warnings and ">clean<" not in with_warnings
    assert "⚠ 2" in with_warnings
    without = admin_client.get(changelist, {"warnings": "no"}).content.decode()
    assert ">clean<" in without and "created-c-ad" not in without

    row = InboundEvent.objects.get(idempotency_key="created-c-admin")
    page = admin_client.get(reverse("admin:messaging_events_inboundevent_change", args=[row.pk])).content.decode()
    assert "<td>payload.phoneNumber</td><td>must not be empty; dropped</td><td><code>empty string</code></td>" in page
    assert "String should have at most 200 characters; dropped" in page
    assert "(250 characters)" in page


def test_the_pipeline_page_links_to_the_applied_events_with_warnings(admin_client: Client) -> None:
    run_task([created_with_bad_fields("c-pipe")])
    html = admin_client.get(reverse("admin-pipeline")).content.decode()
    assert "warnings=yes" in html
    assert ">1 applied event(s)</a>" in html


def test_naive_timestamps_are_stored_as_utc(settings: Any) -> None:
    settings.TIME_ZONE = "Africa/Johannesburg"  # the server's zone never decides what a zone-less time means
    run_task([created_with_bad_fields("c-tz")])
    job = sent("c-tz", 1, sentAt=iso(at(30)).removesuffix("Z"))
    assert run_task([job]) == {"applied": 1}
    assert InboundEvent.objects.get(event_type="message.sent").occurred_at == at(30)
