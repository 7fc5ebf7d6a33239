"""contact.created: resolve identity, link the messagingContactId, sync consent flags."""

import pytest

from crm.models import (
    Activity,
    ActivityType,
    ConsentChange,
    ContactLink,
    MarketingConsent,
    Profile,
    Tenant,
)
from messaging_events.models import InboundEvent
from tests.factories import (
    at,
    contact_created_job,
    contact_preference_updated_job,
    contact_updated_job,
    email_opened_job,
    process,
)

pytestmark = pytest.mark.django_db


def test_creates_tenant_profile_link_and_consent_state() -> None:
    job = contact_created_job(
        event_id="evt_123", email=" John@Example.com ", phone="082 123 4567", email_opt_in=True, sms_opt_in=False
    )
    assert process(job) == "applied"

    tenant = Tenant.objects.get()
    assert tenant.external_id == "tenant_123"
    profile = Profile.objects.get()
    assert (profile.tenant_id, profile.email, profile.phone) == (tenant.pk, "john@example.com", "+27821234567")
    assert (profile.first_name, profile.last_name, profile.is_stub) == ("John", "Smith", False)
    assert (profile.email_opt_in, profile.sms_opt_in, profile.push_opt_in, profile.whatsapp_opt_in) == (
        True,
        False,
        None,
        None,
    )
    assert profile.field_sources["email"]["by"] == "event"
    link = ContactLink.objects.get()
    assert (link.messaging_contact_id, link.profile_id, link.tenant_id) == ("contact_uuid_456", profile.pk, tenant.pk)
    states = {c.channel: (c.opted_in, c.source) for c in MarketingConsent.objects.all()}
    assert states == {"email": (True, "messaging_event"), "sms": (False, "messaging_event")}
    ledger = ConsentChange.objects.order_by("channel")
    assert [(c.channel, c.opted_in, c.superseded, c.occurred_at) for c in ledger] == [
        ("email", True, False, at(0)),
        ("sms", False, False, at(0)),
    ]
    row = InboundEvent.objects.get()
    assert all(c.source_event_id == row.pk for c in ledger)
    assert row.tenant_id == tenant.pk
    assert sorted(Activity.objects.values_list("type", flat=True)) == [
        ActivityType.CONSENT_OPTED_IN,
        ActivityType.CONSENT_OPTED_OUT,
    ]


def test_duplicate_delivery_has_one_effect() -> None:
    job = contact_created_job(event_id="evt_123", email_opt_in=True)
    assert process(job) == "applied"
    assert process(dict(job, id="999")) == "applied"
    assert InboundEvent.objects.get().deliveries == 2
    assert (Profile.objects.count(), ContactLink.objects.count(), ConsentChange.objects.count()) == (1, 1, 1)
    assert Activity.objects.count() == 1


def test_links_existing_profile_by_email_then_phone() -> None:
    process(contact_created_job(contact_id="c1", email="a@example.com", phone="+27821110001"))
    process(contact_created_job(contact_id="c2", email="A@example.com", phone=None))
    process(contact_created_job(contact_id="c3", email="other@example.com", phone="0821110001"))
    profile = Profile.objects.get()
    assert sorted(profile.contact_links.values_list("messaging_contact_id", flat=True)) == ["c1", "c2", "c3"]
    # c3 linked by phone; its different email was not applied (the earlier event's email wins)
    assert profile.email == "a@example.com"
    note = Activity.objects.get(type=ActivityType.PROFILE_UPDATED)
    assert note.data["changes"]["email"] == {"old": "a@example.com", "new": "other@example.com", "applied": False}


def test_email_and_phone_pointing_at_different_profiles_choose_email_and_record_conflict() -> None:
    process(contact_created_job(contact_id="c1", email="a@example.com", phone="+27821110001"))
    process(contact_created_job(contact_id="c2", email="b@example.com", phone="+27821110002"))
    process(contact_created_job(contact_id="c3", email="b@example.com", phone="+27821110001"))
    by_email = ContactLink.objects.get(messaging_contact_id="c2").profile
    by_phone = ContactLink.objects.get(messaging_contact_id="c1").profile
    assert ContactLink.objects.get(messaging_contact_id="c3").profile == by_email
    note = Activity.objects.get(type=ActivityType.PROFILE_UPDATED, profile=by_email)
    assert note.data["identity_conflict"] == {
        "email_profile_id": by_email.pk,
        "phone_profile_id": by_phone.pk,
        "chosen": "email",
    }
    assert Profile.objects.count() == 2


def test_same_contact_in_another_tenant_is_rejected_and_changes_nothing() -> None:
    process(contact_created_job(contact_id="c1", tenant_id="t1", email="a@example.com"))
    status = process(contact_created_job(contact_id="c1", tenant_id="t2", email="z@example.com", email_opt_in=False))
    assert status == "rejected"
    assert "another tenant" in InboundEvent.objects.get(status="rejected").error
    assert list(Tenant.objects.values_list("external_id", flat=True)) == ["t1"]
    assert Profile.objects.get().email == "a@example.com"
    assert ConsentChange.objects.count() == 0


def test_stub_from_early_opt_out_merges_into_existing_profile() -> None:
    # c1 exists; c2 (the same person, same email) opts out of SMS before its contact.created.
    process(contact_created_job(contact_id="c1", email="a@example.com", phone=None, sms_opt_in=True, timestamp=at(0)))
    assert process(contact_preference_updated_job(contact_id="c2", sms_opt_in=False, timestamp=at(5))) == "applied"
    stub = ContactLink.objects.get(messaging_contact_id="c2").profile
    assert stub.is_stub and stub.sms_opt_in is False
    process(email_opened_job(contact_id="c2", message_id="m2", opened_at=at(6)))

    status = process(contact_created_job(contact_id="c2", email="a@example.com", phone=None, timestamp=at(7)))
    assert status == "applied"
    target = Profile.objects.get()
    assert target.pk != stub.pk and not target.is_stub
    assert sorted(target.contact_links.values_list("messaging_contact_id", flat=True)) == ["c1", "c2"]
    assert target.sms_opt_in is False  # the stub's newer opt-out decides
    assert MarketingConsent.objects.get(profile=target, channel="sms").opted_in is False
    assert ConsentChange.objects.filter(profile=target).count() == 2
    assert target.last_email_open_at == at(6)
    assert Activity.objects.filter(profile=target, type=ActivityType.EMAIL_OPENED).count() == 1
    assert Activity.objects.filter(type=ActivityType.PROFILE_MERGED).count() == 1
    merged = Activity.objects.get(type=ActivityType.PROFILE_MERGED)
    assert merged.data["merged_profile_id"] == stub.pk and merged.data["contact_ids"] == ["c2"]
    consent_activities = Activity.objects.filter(profile=target, data__channel="sms").order_by("occurred_at")
    assert [a.type for a in consent_activities] == [ActivityType.CONSENT_OPTED_IN, ActivityType.CONSENT_OPTED_OUT]


def test_stub_without_other_match_becomes_the_real_profile() -> None:
    process(contact_updated_job(contact_id="c1", first_name="Early", timestamp=at(5)))
    stub = Profile.objects.get()
    assert stub.is_stub and stub.first_name == "Early"
    process(contact_created_job(contact_id="c1", email="a@example.com", first_name="John", timestamp=at(0)))
    profile = Profile.objects.get()
    assert profile.pk == stub.pk and not profile.is_stub
    # contact.created occurred earlier, so its name wins (the earliest event's value)
    assert (profile.first_name, profile.email) == ("John", "a@example.com")
