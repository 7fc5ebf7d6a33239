"""message.sent: MESSAGE_SENT activity, SENT interaction, lastMessageAt; parking; tenant checks."""

import pytest

from crm.models import Activity, ActivityType, CampaignInteraction, Profile
from messaging_events.models import InboundEvent
from messaging_events.services.parking import unpark_contacts
from tests.factories import (
    at,
    contact_created_job,
    message_delivered_job,
    message_sent_job,
    process,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def profile() -> Profile:
    process(contact_created_job(timestamp=at(-60)))
    return Profile.objects.get()


def test_activity_interaction_and_last_message_at(profile: Profile) -> None:
    assert process(message_sent_job(sent_at=at(0))) == "applied"
    activity = Activity.objects.get(type=ActivityType.MESSAGE_SENT)
    assert activity.data == {
        "message_id": "msg_789",
        "channel": "EMAIL",
        "template_id": "template_123",
        "template_name": "December Newsletter",
        "campaign_id": "campaign_dec_2025",
    }
    row = CampaignInteraction.objects.get()
    assert (row.type, row.message_id, row.campaign_id, row.template_id, row.channel, row.count) == (
        "SENT",
        "msg_789",
        "campaign_dec_2025",
        "template_123",
        "EMAIL",
        1,
    )
    assert (row.first_at, row.last_at, row.profile_id) == (at(0), at(0), profile.pk)
    profile.refresh_from_db()
    assert profile.last_message_at == at(0)
    assert InboundEvent.objects.get(event_type="message.sent").tenant_id == profile.tenant_id


def test_last_message_at_never_goes_back(profile: Profile) -> None:
    process(message_sent_job(message_id="m2", sent_at=at(30)))
    process(message_sent_job(message_id="m1", sent_at=at(0)))
    profile.refresh_from_db()
    assert profile.last_message_at == at(30)


def test_duplicate_delivery_one_effect(profile: Profile) -> None:
    job = message_sent_job()
    process(job)
    process(job)
    assert InboundEvent.objects.get(event_type="message.sent").deliveries == 2
    assert Activity.objects.filter(type=ActivityType.MESSAGE_SENT).count() == 1
    assert CampaignInteraction.objects.get().count == 1


def test_a_republished_send_counts_again(profile: Profile) -> None:
    process(message_sent_job(sent_at=at(0), event_id="a"))
    process(message_sent_job(sent_at=at(5), event_id="b"))
    row = CampaignInteraction.objects.get()
    assert (row.count, row.first_at, row.last_at) == (2, at(0), at(5))


def test_late_sent_fills_the_campaign_of_earlier_rows(profile: Profile) -> None:
    process(message_delivered_job(delivered_at=at(1)))
    assert CampaignInteraction.objects.get(type="DELIVERED").campaign_id == ""
    process(message_sent_job(sent_at=at(0)))
    delivered = CampaignInteraction.objects.get(type="DELIVERED")
    assert (delivered.campaign_id, delivered.template_id, delivered.channel) == (
        "campaign_dec_2025",
        "template_123",
        "EMAIL",
    )


def test_unknown_contact_is_parked_then_applied_when_it_appears() -> None:
    assert process(message_sent_job(contact_id="later", sent_at=at(0))) == "parked"
    assert not Activity.objects.exists()
    process(contact_created_job(contact_id="later", email="later@example.com", timestamp=at(-5)))
    assert unpark_contacts(["later"]) == 1
    assert InboundEvent.objects.get(event_type="message.sent").status == "applied"
    assert Activity.objects.filter(type=ActivityType.MESSAGE_SENT).count() == 1
    assert Profile.objects.get().last_message_at == at(0)


def test_unknown_contact_with_stated_tenant_is_parked_too() -> None:
    assert process(message_sent_job(contact_id="later", tenant_id="tenant_9")) == "parked"
    assert not Profile.objects.exists()


def test_stated_tenant_other_than_the_links_is_rejected(profile: Profile) -> None:
    assert process(message_sent_job(tenant_id="other_tenant")) == "rejected"
    assert "another tenant" in InboundEvent.objects.get(event_type="message.sent").error
    assert not CampaignInteraction.objects.exists()
    assert not Activity.objects.filter(type=ActivityType.MESSAGE_SENT).exists()
    profile.refresh_from_db()
    assert profile.last_message_at is None


def test_stated_tenant_matching_the_link_is_applied(profile: Profile) -> None:
    assert process(message_sent_job(tenant_id="tenant_123")) == "applied"
