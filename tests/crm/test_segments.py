"""Segment rules and membership: consent channel, minimum score, verified email; refresh and rebuild."""

import pytest
from django.contrib.auth import get_user_model

from crm.models import Profile, Segment, SegmentMembership
from crm.services.segments import segment_membership_refresh, segment_rebuild
from crm.services.tenants import tenant_get_or_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant():
    return tenant_get_or_create("t1")


def test_rules(tenant) -> None:
    segment = Segment.objects.create(
        tenant=tenant,
        name="all rules",
        required_consent_channel="email",
        min_engagement_score=10,
        require_verified_email=True,
    )
    cases = [
        ({"email_opt_in": True, "engagement_score": 10, "email_verified": True}, True),
        ({"email_opt_in": None, "engagement_score": 10, "email_verified": True}, False),
        ({"email_opt_in": False, "engagement_score": 50, "email_verified": True}, False),
        ({"email_opt_in": True, "engagement_score": 9.99, "email_verified": True}, False),
        ({"email_opt_in": True, "engagement_score": 10, "email_verified": None}, False),
    ]
    for values, member in cases:
        profile = Profile.objects.create(tenant=tenant, **values)
        segment_membership_refresh(profile=profile)
        assert SegmentMembership.objects.filter(segment=segment, profile=profile).exists() is member, values


def test_other_tenants_segments_are_ignored(tenant) -> None:
    Segment.objects.create(tenant=tenant_get_or_create("t2"), name="everyone")
    profile = Profile.objects.create(tenant=tenant)
    segment_membership_refresh(profile=profile)
    assert not SegmentMembership.objects.exists()


def test_rebuild_after_a_rule_change(tenant) -> None:
    profiles = [Profile.objects.create(tenant=tenant, sms_opt_in=value) for value in (True, True, False, None)]
    segment = Segment.objects.create(tenant=tenant, name="sms", required_consent_channel="sms")
    assert segment_rebuild(segment=segment) == 2
    assert set(segment.memberships.values_list("profile_id", flat=True)) == {profiles[0].pk, profiles[1].pk}
    segment.required_consent_channel = ""
    segment.save()
    assert segment_rebuild(segment=segment) == 4
    segment.min_engagement_score = 1
    segment.save()
    assert segment_rebuild(segment=segment) == 0
    assert all(m.tenant_id == tenant.pk for m in SegmentMembership.objects.all())


def test_staff_verification_change_updates_membership(tenant) -> None:
    from crm.services.profiles import profile_update_by_staff

    staff = get_user_model().objects.create_user("staff", is_staff=True)
    segment = Segment.objects.create(tenant=tenant, name="verified", require_verified_email=True)
    profile = Profile.objects.create(tenant=tenant, email="a@example.com")
    profile_update_by_staff(profile=profile, changes={"email_verified": True}, user=staff)
    assert SegmentMembership.objects.filter(segment=segment, profile=profile).exists()
    profile_update_by_staff(profile=profile, changes={"email_verified": False}, user=staff)
    assert not SegmentMembership.objects.exists()
