"""email.clicked: EMAIL_CLICKED activity, CLICKED interaction, AttributionEvent if applicable, refresh."""

import pytest

from crm.models import Activity, ActivityType, AttributionEvent, CampaignInteraction, PendingScoreRefresh, Profile
from messaging_events.models import InboundEvent
from tests.factories import at, contact_created_job, email_clicked_job, process

pytestmark = pytest.mark.django_db


@pytest.fixture
def profile() -> Profile:
    process(contact_created_job(timestamp=at(-60)))
    return Profile.objects.get()


def test_click_with_campaign_and_utm(profile: Profile) -> None:
    url = "https://example.com/offer?utm_source=newsletter&utm_medium=email&utm_campaign=dec&utm_term=a+b&utm_content=hero&x=1"
    assert process(email_clicked_job(link_url=url, clicked_at=at(76))) == "applied"
    activity = Activity.objects.get(type=ActivityType.EMAIL_CLICKED)
    assert activity.data == {
        "message_id": "msg_789",
        "campaign_id": "campaign_dec_2025",
        "link_id": "link_123",
        "link_url": url,
    }
    row = CampaignInteraction.objects.get(type="CLICKED")
    assert (row.campaign_id, row.channel, row.count) == ("campaign_dec_2025", "EMAIL", 1)
    attribution = AttributionEvent.objects.get()
    assert (attribution.profile_id, attribution.campaign_id, attribution.message_id, attribution.link_id) == (
        profile.pk,
        "campaign_dec_2025",
        "msg_789",
        "link_123",
    )
    assert attribution.link_url == url
    assert (
        attribution.utm_source,
        attribution.utm_medium,
        attribution.utm_campaign,
        attribution.utm_term,
        attribution.utm_content,
    ) == ("newsletter", "email", "dec", "a b", "hero")
    assert attribution.occurred_at == at(76)
    assert attribution.source_event_id == InboundEvent.objects.get(event_type="email.clicked").pk
    profile.refresh_from_db()
    assert (profile.last_activity_at, profile.last_email_open_at) == (at(76), None)
    assert PendingScoreRefresh.objects.filter(profile=profile).exists()


def test_utm_only_click_is_attributed(profile: Profile) -> None:
    process(email_clicked_job(campaign_id=None, link_url="https://example.com/?utm_campaign=spring"))
    attribution = AttributionEvent.objects.get()
    assert (attribution.campaign_id, attribution.utm_campaign, attribution.utm_source) == ("", "spring", "")


def test_click_without_campaign_or_utm_is_not_attributed(profile: Profile) -> None:
    process(email_clicked_job(campaign_id=None, link_url="https://example.com/offer?ref=1"))
    assert not AttributionEvent.objects.exists()
    assert Activity.objects.filter(type=ActivityType.EMAIL_CLICKED).count() == 1
    assert CampaignInteraction.objects.get(type="CLICKED").count == 1


def test_duplicate_delivery(profile: Profile) -> None:
    job = email_clicked_job()
    process(job)
    process(job)
    assert AttributionEvent.objects.count() == 1
    assert CampaignInteraction.objects.get(type="CLICKED").count == 1
    assert Activity.objects.filter(type=ActivityType.EMAIL_CLICKED).count() == 1
