"""email.opened: EMAIL_OPENED activity, OPENED interaction (count), lastActivityAt/lastEmailOpenAt, score refresh."""

import pytest

from crm.models import Activity, ActivityType, CampaignInteraction, PendingScoreRefresh, Profile
from crm.services import engagement
from messaging_events.models import InboundEvent
from tests.factories import at, contact_created_job, email_opened_job, message_sent_job, process

pytestmark = pytest.mark.django_db


@pytest.fixture
def profile() -> Profile:
    process(contact_created_job(timestamp=at(-60)))
    return Profile.objects.get()


def test_activity_interaction_timestamps_and_refresh_request(profile: Profile) -> None:
    process(message_sent_job(sent_at=at(0)))
    assert process(email_opened_job(opened_at=at(75))) == "applied"
    activity = Activity.objects.get(type=ActivityType.EMAIL_OPENED)
    assert activity.data == {"message_id": "msg_789", "campaign_id": "campaign_dec_2025", "device_type": "mobile"}
    row = CampaignInteraction.objects.get(type="OPENED")
    assert (row.campaign_id, row.channel, row.count, row.first_at, row.last_at) == (
        "campaign_dec_2025",
        "EMAIL",
        1,
        at(75),
        at(75),
    )
    profile.refresh_from_db()
    assert (profile.last_activity_at, profile.last_email_open_at) == (at(75), at(75))
    assert list(PendingScoreRefresh.objects.values_list("profile_id", flat=True)) == [profile.pk]


def test_repeated_opens_count_and_timestamps_take_the_greatest(profile: Profile) -> None:
    process(email_opened_job(opened_at=at(90), event_id="o2"))
    process(email_opened_job(opened_at=at(75), event_id="o1"))
    process(email_opened_job(opened_at=at(80), event_id="o3", campaign_id=None))
    row = CampaignInteraction.objects.get(type="OPENED")
    assert (row.count, row.first_at, row.last_at, row.campaign_id) == (3, at(75), at(90), "campaign_dec_2025")
    profile.refresh_from_db()
    assert (profile.last_activity_at, profile.last_email_open_at) == (at(90), at(90))
    assert PendingScoreRefresh.objects.count() == 1  # coalesced: one row per profile


def test_campaign_from_sent_when_the_open_names_none(profile: Profile) -> None:
    process(email_opened_job(opened_at=at(75), campaign_id=None))
    process(message_sent_job(sent_at=at(0), campaign_id="camp_x"))
    assert CampaignInteraction.objects.get(type="OPENED").campaign_id == "camp_x"


def test_refresh_is_scheduled_once_per_window(
    profile: Profile, broker_redis, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    from crm import tasks

    calls = []
    monkeypatch.setattr(tasks.refresh_pending_engagement_scores, "apply_async", lambda **kw: calls.append(kw))
    monkeypatch.setattr(engagement, "_scheduled_until", 0.0)
    with django_capture_on_commit_callbacks(execute=True):
        for minute in range(10):
            process(email_opened_job(opened_at=at(75 + minute), event_id=f"open-{minute}"))
    assert len(calls) == 1
    assert calls[0]["queue"] == "low" and calls[0]["countdown"] == pytest.approx(0.5)
    assert broker_redis.exists(engagement.SCHEDULE_KEY)
    # nothing was recomputed per event: the score waits for the drain
    profile.refresh_from_db()
    assert profile.engagement_score == 0.0
    assert engagement.engagement_pending_drain() == 1
    profile.refresh_from_db()
    assert profile.engagement_breakdown["types"]["EMAIL_OPENED"]["count"] == 10
    assert not PendingScoreRefresh.objects.exists()


def test_duplicate_delivery(profile: Profile) -> None:
    job = email_opened_job()
    process(job)
    process(job)
    assert InboundEvent.objects.get(event_type="email.opened").deliveries == 2
    assert CampaignInteraction.objects.get(type="OPENED").count == 1
