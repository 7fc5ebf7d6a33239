"""message.failed: MESSAGE_FAILED activity, FAILED interaction, unverify email/phone on invalid address."""

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from crm.models import Activity, ActivityType, CampaignInteraction, Profile, Segment, SegmentMembership
from crm.services.profiles import profile_update_by_staff
from tests.factories import at, contact_created_job, message_failed_job, message_sent_job, process

pytestmark = pytest.mark.django_db


@pytest.fixture
def profile() -> Profile:
    process(contact_created_job(timestamp=at(-60)))
    return Profile.objects.get()


def test_invalid_email_unverifies_email(profile: Profile) -> None:
    process(message_sent_job(sent_at=at(0)))
    assert process(message_failed_job(reason="invalid_email", failed_at=at(1))) == "applied"
    profile.refresh_from_db()
    assert (profile.email_verified, profile.phone_verified) == (False, None)
    assert profile.field_sources["email_verified"]["by"] == "event"
    activity = Activity.objects.get(type=ActivityType.MESSAGE_FAILED)
    assert activity.data == {"message_id": "msg_789", "reason": "invalid_email", "invalidates": "email_verified"}
    row = CampaignInteraction.objects.get(type="FAILED")
    assert (row.campaign_id, row.count) == ("campaign_dec_2025", 1)


@pytest.mark.parametrize("reason", ["invalid_number", "INVALID_PHONE", "carrier: invalid_msisdn"])
def test_invalid_number_unverifies_phone(profile: Profile, reason: str) -> None:
    process(message_failed_job(reason=reason))
    profile.refresh_from_db()
    assert (profile.email_verified, profile.phone_verified) == (None, False)


def test_other_reasons_leave_verification_alone(profile: Profile) -> None:
    process(message_failed_job(reason="provider_timeout"))
    process(message_failed_job(reason=None, message_id="m2"))
    profile.refresh_from_db()
    assert (profile.email_verified, profile.phone_verified) == (None, None)
    assert CampaignInteraction.objects.filter(type="FAILED").count() == 2


def test_older_failure_cannot_undo_a_newer_staff_verification(profile: Profile) -> None:
    staff = get_user_model().objects.create_user("staff", is_staff=True)
    segment = Segment.objects.create(tenant_id=profile.tenant_id, name="verified", require_verified_email=True)
    profile_update_by_staff(profile=profile, changes={"email_verified": True}, user=staff)
    assert SegmentMembership.objects.filter(segment=segment, profile=profile).exists()
    process(message_failed_job(reason="invalid_email", failed_at=at(1)))  # occurred in 2025: before the edit
    profile.refresh_from_db()
    assert profile.email_verified is True
    assert SegmentMembership.objects.filter(segment=segment).exists()


def test_a_newer_failure_unverifies_and_leaves_the_segment(profile: Profile) -> None:
    staff = get_user_model().objects.create_user("staff", is_staff=True)
    segment = Segment.objects.create(tenant_id=profile.tenant_id, name="verified", require_verified_email=True)
    profile_update_by_staff(profile=profile, changes={"email_verified": True}, user=staff)
    process(message_failed_job(message_id="m9", failed_at=timezone.now()))
    profile.refresh_from_db()
    assert profile.email_verified is False
    assert not SegmentMembership.objects.filter(segment=segment).exists()
