"""contact.updated: fill profile fields only where not already set; activity on significant change.

Its opt-in flags never change consent: they are an observation (docs/decisions.md).
"""

from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from crm.models import Activity, ActivityType, ConsentChange, ContactLink, MarketingConsent, Profile
from crm.services.consent import consent_record_by_staff
from crm.services.profiles import consent_report_disagreements, profile_update_by_staff
from messaging_events.models import InboundEvent
from tests.factories import (
    at,
    contact_created_job,
    contact_preference_updated_job,
    contact_updated_job,
    process,
    sms_replied_job,
)

pytestmark = pytest.mark.django_db


def _created(**kwargs) -> Profile:
    process(contact_created_job(timestamp=at(0), **kwargs))
    return Profile.objects.get()


def test_fills_empty_fields_keeps_set_ones_and_records_the_change() -> None:
    _created(phone=None, first_name="John", last_name="Smith")
    job = contact_updated_job(
        event_id="evt_124",
        email="john@example.com",
        phone="+27821234567",
        first_name="Jonathan",
        last_name="Smith-Jones",
        email_opt_in=True,
        sms_opt_in=False,
        timestamp=at(10),
    )
    assert process(job) == "applied"
    profile = Profile.objects.get()
    assert (profile.first_name, profile.last_name) == ("John", "Smith")  # already set by an earlier event
    assert profile.phone == "+27821234567"  # was empty
    assert (profile.email_opt_in, profile.sms_opt_in) == (None, None)  # reported, not stated
    assert not ConsentChange.objects.exists() and not MarketingConsent.objects.exists()
    note = Activity.objects.get(type=ActivityType.PROFILE_UPDATED)
    assert note.data["changes"] == {
        "phone": {"old": "", "new": "+27821234567", "applied": True},
        "first_name": {"old": "John", "new": "Jonathan", "applied": False},
        "last_name": {"old": "Smith", "new": "Smith-Jones", "applied": False},
    }
    assert note.data["consent_reported"] == {"email": True, "sms": False}
    assert note.data["consent_disagrees"] == {
        "email": {"reported": True, "crm": None},
        "sms": {"reported": False, "crm": None},
    }
    assert note.source_event_id == InboundEvent.objects.get(idempotency_key="evt_124").pk


def test_no_activity_when_nothing_differs() -> None:
    _created()
    process(contact_updated_job(email="john@example.com", first_name="John", timestamp=at(10)))
    assert not Activity.objects.filter(type=ActivityType.PROFILE_UPDATED).exists()


def test_earliest_event_wins_whatever_the_arrival_order() -> None:
    # The update (later) arrives first, on an unknown contact: a stub gets its values.
    process(contact_updated_job(first_name="Jonathan", last_name="Smith-Jones", timestamp=at(10)))
    process(contact_created_job(first_name="John", last_name=None, timestamp=at(0)))
    profile = Profile.objects.get()
    assert (profile.first_name, profile.last_name) == ("John", "Smith-Jones")
    assert profile.field_sources["first_name"]["at"].startswith("2025-12-14T08:00:00")


def test_staff_edits_are_never_overwritten() -> None:
    profile = _created(first_name="John")
    staff = get_user_model().objects.create_user("staff", is_staff=True)
    edited_from = timezone.now()
    profile_update_by_staff(profile=profile, changes={"first_name": "Johnny", "email": "J@Example.com"}, user=staff)
    edited_until = timezone.now()
    process(contact_updated_job(first_name="Jonathan", email="x@example.com", timestamp=at(-60)))
    profile.refresh_from_db()
    assert (profile.first_name, profile.email) == ("Johnny", "j@example.com")
    source = profile.field_sources["first_name"]
    assert set(source) == {"by", "at", "user"}
    assert (source["by"], source["user"]) == ("staff", staff.pk)
    assert edited_from <= datetime.fromisoformat(source["at"]) <= edited_until


def test_unknown_contact_gets_a_stub_with_the_report_but_no_consent() -> None:
    assert process(contact_updated_job(contact_id="new", email_opt_in=False, first_name="Ann")) == "applied"
    profile = ContactLink.objects.get(messaging_contact_id="new").profile
    assert profile.is_stub and profile.email_opt_in is None and profile.first_name == "Ann"
    assert not MarketingConsent.objects.filter(profile=profile).exists()
    assert profile.consent_reports["email"]["opted_in"] is False


def test_a_routine_update_never_reverses_an_opt_out_the_crm_recorded() -> None:
    """STOP by SMS, and a staff opt-out, then the Messaging service's usual full snapshot."""
    _created(sms_opt_in=True, email_opt_in=True)
    assert process(sms_replied_job(reply_text="STOP", replied_at=at(5))) == "applied"
    staff = get_user_model().objects.create_user("staff", is_staff=True)
    consent_record_by_staff(
        profile=Profile.objects.get(), channel="email", opted_in=False, user=staff, lawful_basis="phoned support"
    )
    ledger_before = ConsentChange.objects.count()

    job = contact_updated_job(event_id="snap", first_name="John", sms_opt_in=True, email_opt_in=True)
    job["timestamp"] = int((timezone.now() + timedelta(minutes=1)).timestamp() * 1000)  # after both
    assert process(job) == "applied"

    profile = Profile.objects.get()
    assert (profile.sms_opt_in, profile.email_opt_in) == (False, False)
    assert ConsentChange.objects.count() == ledger_before
    assert [str(d) for d in consent_report_disagreements(profile=profile)] == [
        f"Messaging reports emailOptIn=true since {profile.consent_reports['email']['at']}",
        f"Messaging reports smsOptIn=true since {profile.consent_reports['sms']['at']}",
    ]
    note = Activity.objects.get(type=ActivityType.PROFILE_UPDATED)
    assert note.data["consent_disagrees"]["sms"] == {"reported": True, "crm": False}


def test_a_consent_event_still_decides_and_ends_the_disagreement() -> None:
    _created(sms_opt_in=False)
    process(contact_updated_job(sms_opt_in=True, timestamp=at(10)))
    profile = Profile.objects.get()
    assert profile.sms_opt_in is False and len(consent_report_disagreements(profile=profile)) == 1
    process(contact_preference_updated_job(sms_opt_in=True, timestamp=at(20)))
    profile.refresh_from_db()
    assert profile.sms_opt_in is True and consent_report_disagreements(profile=profile) == []


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_the_latest_report_is_kept_whatever_the_arrival_order(order: tuple[int, int]) -> None:
    _created()
    jobs = [
        contact_updated_job(sms_opt_in=True, timestamp=at(10)),
        contact_updated_job(sms_opt_in=False, timestamp=at(20)),
    ]
    for i in order:
        process(jobs[i])
    report = Profile.objects.get().consent_reports["sms"]
    assert report["opted_in"] is False and report["at"].startswith("2025-12-14T08:20:00")


def test_unknown_contact_with_known_email_links_to_that_profile() -> None:
    profile = _created(contact_id="c1", email="a@example.com")
    process(contact_updated_job(contact_id="c2", email="A@example.com", timestamp=at(5)))
    assert ContactLink.objects.get(messaging_contact_id="c2").profile_id == profile.pk
    assert Profile.objects.count() == 1
