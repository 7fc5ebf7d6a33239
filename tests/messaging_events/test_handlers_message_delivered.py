"""message.delivered: MESSAGE_DELIVERED activity, DELIVERED interaction with the SENT row's campaign."""

import pytest

from crm.models import Activity, ActivityType, CampaignInteraction, Profile
from messaging_events.models import InboundEvent
from tests.factories import at, contact_created_job, message_delivered_job, message_sent_job, process

pytestmark = pytest.mark.django_db


@pytest.fixture
def profile() -> Profile:
    process(contact_created_job(timestamp=at(-60)))
    return Profile.objects.get()


def test_activity_and_interaction_take_the_campaign_from_sent(profile: Profile) -> None:
    process(message_sent_job(sent_at=at(0)))
    assert process(message_delivered_job(delivered_at=at(1))) == "applied"
    activity = Activity.objects.get(type=ActivityType.MESSAGE_DELIVERED)
    assert (activity.data, activity.occurred_at, activity.profile_id) == ({"message_id": "msg_789"}, at(1), profile.pk)
    row = CampaignInteraction.objects.get(type="DELIVERED")
    assert (row.campaign_id, row.channel, row.count, row.first_at) == ("campaign_dec_2025", "EMAIL", 1, at(1))


def test_before_sent_then_filled(profile: Profile) -> None:
    process(message_delivered_job(delivered_at=at(1)))
    process(message_sent_job(sent_at=at(0)))
    assert CampaignInteraction.objects.get(type="DELIVERED").campaign_id == "campaign_dec_2025"


def test_duplicate_delivery(profile: Profile) -> None:
    job = message_delivered_job()
    process(job)
    process(job)
    assert InboundEvent.objects.get(event_type="message.delivered").deliveries == 2
    assert CampaignInteraction.objects.get(type="DELIVERED").count == 1
    assert Activity.objects.filter(type=ActivityType.MESSAGE_DELIVERED).count() == 1
