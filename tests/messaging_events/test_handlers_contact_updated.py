"""contact.updated: fill profile fields only where not already set; activity on significant change."""

from datetime import datetime

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from crm.models import Activity, ActivityType, ContactLink, MarketingConsent, Profile
from crm.services.profiles import profile_update_by_staff
from messaging_events.models import InboundEvent
from tests.factories import at, contact_created_job, contact_updated_job, process

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
    assert (profile.email_opt_in, profile.sms_opt_in) == (True, False)
    note = Activity.objects.get(type=ActivityType.PROFILE_UPDATED)
    assert note.data["changes"] == {
        "phone": {"old": "", "new": "+27821234567", "applied": True},
        "first_name": {"old": "John", "new": "Jonathan", "applied": False},
        "last_name": {"old": "Smith", "new": "Smith-Jones", "applied": False},
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


def test_unknown_contact_gets_a_stub_so_an_opt_out_is_not_delayed() -> None:
    assert process(contact_updated_job(contact_id="new", email_opt_in=False, first_name="Ann")) == "applied"
    profile = ContactLink.objects.get(messaging_contact_id="new").profile
    assert profile.is_stub and profile.email_opt_in is False and profile.first_name == "Ann"
    assert MarketingConsent.objects.get(profile=profile).opted_in is False


def test_unknown_contact_with_known_email_links_to_that_profile() -> None:
    profile = _created(contact_id="c1", email="a@example.com")
    process(contact_updated_job(contact_id="c2", email="A@example.com", timestamp=at(5)))
    assert ContactLink.objects.get(messaging_contact_id="c2").profile_id == profile.pk
    assert Profile.objects.count() == 1
