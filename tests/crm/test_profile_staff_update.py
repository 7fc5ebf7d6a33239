"""profile_update_by_staff: provenance "staff", normalisation, refusal of consent and unknown fields."""

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from crm.errors import ApplicationError
from crm.models import Activity, ActivityType, Profile
from crm.services.profiles import profile_update_by_staff
from tests.factories import at, contact_created_job, message_bounced_job, process

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("staff", is_staff=True)


def test_edit_marks_staff_provenance_and_records_activity(staff) -> None:
    process(contact_created_job(timestamp=at(0)))
    profile = Profile.objects.get()
    profile_update_by_staff(
        profile=profile,
        changes={"phone": "082 999 0000", "email": " New@Example.com", "phone_verified": True},
        user=staff,
    )
    profile.refresh_from_db()
    assert (profile.phone, profile.email, profile.phone_verified) == ("+27829990000", "new@example.com", True)
    for field in ("phone", "email", "phone_verified"):
        assert profile.field_sources[field]["by"] == "staff"
        assert profile.field_sources[field]["user"] == staff.pk
    assert profile.field_sources["first_name"]["by"] == "event"
    note = Activity.objects.get(type=ActivityType.PROFILE_UPDATED)
    assert note.data["by"] == "staff" and note.data["changes"]["phone"] == {
        "old": "+27821234567",
        "new": "+27829990000",
    }


def test_refuses_consent_and_unknown_fields_and_invalid_values(staff) -> None:
    process(contact_created_job(timestamp=at(0)))
    profile = Profile.objects.get()
    for changes in ({"email_opt_in": False}, {"engagement_score": 99}, {"email": "nope"}, {"phone": "12"}):
        with pytest.raises(ApplicationError), transaction.atomic():
            profile_update_by_staff(profile=profile, changes=changes, user=staff)
    assert Profile.objects.get().email == "john@example.com"


def test_a_bounce_after_staff_verification_unverifies(staff) -> None:
    process(contact_created_job(timestamp=at(0)))
    profile = Profile.objects.get()
    profile_update_by_staff(profile=profile, changes={"email_verified": True}, user=staff)
    process(message_bounced_job(bounced_at=at(5)))  # occurred before the staff decision: ignored
    assert Profile.objects.get().email_verified is True
