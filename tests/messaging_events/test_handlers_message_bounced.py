"""message.bounced: MESSAGE_BOUNCED activity, BOUNCED interaction, hard → unverified, bounce automation."""

import pytest
from django.test import override_settings

from crm.models import (
    Activity,
    ActivityType,
    CampaignInteraction,
    ConsentChange,
    HardBounce,
    MarketingConsent,
    Profile,
)
from tests.factories import at, contact_created_job, message_bounced_job, message_sent_job, process

pytestmark = pytest.mark.django_db


@pytest.fixture
def profile() -> Profile:
    process(contact_created_job(email_opt_in=True, timestamp=at(-60)))
    return Profile.objects.get()


def test_hard_bounce_before_sent(profile: Profile) -> None:
    # High priority: the bounce is often applied before the normal-priority send.
    assert process(message_bounced_job(bounced_at=at(1))) == "applied"
    process(message_sent_job(sent_at=at(0)))
    profile.refresh_from_db()
    assert profile.email_verified is False
    assert profile.email_opt_in is True  # one hard bounce is not enough
    activity = Activity.objects.get(type=ActivityType.MESSAGE_BOUNCED)
    assert activity.data == {"message_id": "msg_789", "bounce_type": "hard", "reason": "mailbox_not_found"}
    row = CampaignInteraction.objects.get(type="BOUNCED")
    assert (row.campaign_id, row.count, row.first_at) == ("campaign_dec_2025", 1, at(1))
    assert list(HardBounce.objects.values_list("message_id", "occurred_at")) == [("msg_789", at(1))]


def test_soft_bounce_changes_neither_verification_nor_consent(profile: Profile) -> None:
    process(message_bounced_job(bounce_type="soft", reason="mailbox_full", message_id="m1", bounced_at=at(1)))
    process(message_bounced_job(bounce_type="soft", reason="mailbox_full", message_id="m2", bounced_at=at(2)))
    process(message_bounced_job(bounce_type="soft", reason="mailbox_full", message_id="m3", bounced_at=at(3)))
    profile.refresh_from_db()
    assert (profile.email_verified, profile.email_opt_in) == (None, True)
    assert not HardBounce.objects.exists()
    assert CampaignInteraction.objects.filter(type="BOUNCED").count() == 3
    assert ConsentChange.objects.count() == 1


def test_two_hard_bounces_in_the_window_opt_email_out(profile: Profile) -> None:
    process(message_bounced_job(message_id="m1", bounced_at=at(0, days=1)))
    process(message_bounced_job(message_id="m2", bounced_at=at(0, days=30)))
    profile.refresh_from_db()
    assert profile.email_opt_in is False
    state = MarketingConsent.objects.get(channel="email")
    assert (state.opted_in, state.source, state.changed_at) == (False, "bounce_automation", at(0, days=30))
    automated = ConsentChange.objects.filter(source="bounce_automation")
    assert [(c.opted_in, c.occurred_at) for c in automated] == [(False, at(0, days=30))]
    opt_out = Activity.objects.get(type=ActivityType.CONSENT_OPTED_OUT)
    assert opt_out.data["source"] == "bounce_automation"


def test_hard_bounces_outside_the_window_do_not(profile: Profile) -> None:
    process(message_bounced_job(message_id="m1", bounced_at=at(0, days=1)))
    process(message_bounced_job(message_id="m2", bounced_at=at(0, days=100)))
    profile.refresh_from_db()
    assert profile.email_opt_in is True
    assert not ConsentChange.objects.filter(source="bounce_automation").exists()


def test_automation_is_order_independent(profile: Profile) -> None:
    # Three bounces arriving newest first: the automated statements are those of bounces 2 and 3.
    for day in (60, 30, 1):
        process(message_bounced_job(message_id=f"m{day}", bounced_at=at(0, days=day)))
    automated = ConsentChange.objects.filter(source="bounce_automation").order_by("occurred_at")
    assert [c.occurred_at for c in automated] == [at(0, days=30), at(0, days=60)]
    assert Activity.objects.filter(type=ActivityType.CONSENT_OPTED_OUT).count() == 1


@override_settings(HARD_BOUNCE_OPT_OUT_THRESHOLD=3)
def test_threshold_is_a_setting(profile: Profile) -> None:
    process(message_bounced_job(message_id="m1", bounced_at=at(1)))
    process(message_bounced_job(message_id="m2", bounced_at=at(2)))
    assert Profile.objects.get().email_opt_in is True
    process(message_bounced_job(message_id="m3", bounced_at=at(3)))
    assert Profile.objects.get().email_opt_in is False


def test_a_newer_opt_in_after_the_automation_wins(profile: Profile) -> None:
    from tests.factories import contact_preference_updated_job

    process(message_bounced_job(message_id="m1", bounced_at=at(1)))
    process(message_bounced_job(message_id="m2", bounced_at=at(2)))
    process(contact_preference_updated_job(email_opt_in=True, timestamp=at(3)))
    assert Profile.objects.get().email_opt_in is True


def test_duplicate_delivery(profile: Profile) -> None:
    job = message_bounced_job()
    process(job)
    process(job)
    assert HardBounce.objects.count() == 1
    assert CampaignInteraction.objects.get(type="BOUNCED").count == 1
    assert Activity.objects.filter(type=ActivityType.MESSAGE_BOUNCED).count() == 1
