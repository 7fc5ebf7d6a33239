"""Merging a stub into the profile its contact resolves to: everything moves, one PROFILE_MERGED."""

import pytest

from crm.models import (
    Activity,
    ActivityType,
    AttributionEvent,
    CampaignInteraction,
    ConsentChange,
    ContactLink,
    HardBounce,
    MarketingConsent,
    PendingScoreRefresh,
    Profile,
    Segment,
    SegmentMembership,
)
from crm.services.segments import segment_rebuild
from tests.factories import (
    at,
    contact_created_job,
    contact_updated_job,
    email_clicked_job,
    message_bounced_job,
    message_sent_job,
    process,
)

pytestmark = pytest.mark.django_db


def test_everything_moves_and_bounces_combine() -> None:
    process(contact_created_job(contact_id="c1", email="a@example.com", phone=None, email_opt_in=True, timestamp=at(0)))
    real = Profile.objects.get()
    segment = Segment.objects.create(tenant_id=real.tenant_id, name="email", required_consent_channel="email")
    assert segment_rebuild(segment=segment) == 1
    assert SegmentMembership.objects.filter(profile=real).exists()
    process(message_bounced_job(contact_id="c1", message_id="m1", bounced_at=at(2)))
    assert Profile.objects.get(pk=real.pk).email_opt_in is True  # one hard bounce

    # c2: the same person, known first through an update (a stub with a name and a phone).
    process(contact_updated_job(contact_id="c2", first_name="Annie", phone="0821110002", timestamp=at(3)))
    stub = ContactLink.objects.get(messaging_contact_id="c2").profile
    assert stub.is_stub
    process(message_sent_job(contact_id="c2", message_id="m2", sent_at=at(4)))
    process(email_clicked_job(contact_id="c2", message_id="m2", clicked_at=at(5)))
    process(message_bounced_job(contact_id="c2", message_id="m2", bounced_at=at(6)))
    assert PendingScoreRefresh.objects.filter(profile=stub).exists()

    process(contact_created_job(contact_id="c2", email="a@example.com", phone=None, first_name="Ann", timestamp=at(7)))

    assert not Profile.objects.filter(pk=stub.pk).exists()
    profile = Profile.objects.get()
    assert profile.pk == real.pk
    assert sorted(profile.contact_links.values_list("messaging_contact_id", flat=True)) == ["c1", "c2"]
    # the name set by the earlier event (c1's "John" at 0) wins; the empty phone is filled from the stub
    assert (profile.first_name, profile.phone) == ("John", "+27821110002")
    assert profile.last_message_at == at(4) and profile.last_activity_at == at(5)
    assert CampaignInteraction.objects.filter(profile=profile).count() == 4  # BOUNCED m1, SENT/CLICKED/BOUNCED m2
    assert AttributionEvent.objects.get().profile_id == profile.pk
    assert set(HardBounce.objects.values_list("profile_id", "message_id")) == {(profile.pk, "m1"), (profile.pk, "m2")}
    # the two hard bounces, now on one profile, reach the threshold: email opted out at the second
    assert profile.email_opt_in is False
    state = MarketingConsent.objects.get(profile=profile, channel="email")
    assert (state.source, state.changed_at) == ("bounce_automation", at(6))
    assert not SegmentMembership.objects.exists()
    assert ConsentChange.objects.filter(profile=profile).count() == 2
    merged = Activity.objects.get(type=ActivityType.PROFILE_MERGED)
    assert merged.data["merged_profile_id"] == stub.pk and merged.data["contact_ids"] == ["c2"]
    assert merged.data["moved"]["interactions"] == 3
    assert Activity.objects.filter(profile=profile, type=ActivityType.EMAIL_CLICKED).count() == 1
    assert not Activity.objects.exclude(profile=profile).exists()
    # recomputed with the moved click (15 points at at(5)), the only engagement activity
    age_days = (profile.engagement_scored_at - at(5)).total_seconds() / 86400
    assert profile.engagement_score == pytest.approx(15 * 0.5 ** (age_days / 30), abs=1e-4)
    assert profile.engagement_breakdown["types"] == {
        "EMAIL_CLICKED": {"count": 1, "weight": 15.0, "points": profile.engagement_score}
    }
    assert not PendingScoreRefresh.objects.filter(profile_id=stub.pk).exists()
