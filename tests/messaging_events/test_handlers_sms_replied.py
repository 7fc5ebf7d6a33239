"""sms.replied: SMS_REPLIED activity, lastActivityAt, engagement refresh, opt-out keywords."""

import pytest

from crm.models import Activity, ActivityType, ConsentChange, PendingScoreRefresh, Profile
from crm.services.engagement import engagement_pending_drain
from crm.services.sms_keywords import sms_opt_out_keyword
from tests.factories import at, contact_created_job, contact_preference_updated_job, process, sms_replied_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def profile() -> Profile:
    process(contact_created_job(sms_opt_in=True, timestamp=at(-60)))
    return Profile.objects.get()


def test_reply_is_a_high_value_engagement(profile: Profile) -> None:
    assert process(sms_replied_job(replied_at=at(120))) == "applied"
    activity = Activity.objects.get(type=ActivityType.SMS_REPLIED)
    assert activity.data == {
        "original_message_id": "msg_789",
        "reply_text": "Yes, I'm interested",
        "opt_out_keyword": "",
    }
    profile.refresh_from_db()
    assert profile.last_activity_at == at(120)
    assert profile.sms_opt_in is True
    assert PendingScoreRefresh.objects.filter(profile=profile).exists()
    engagement_pending_drain()
    profile.refresh_from_db()
    assert profile.engagement_score > 0
    assert profile.engagement_breakdown["types"]["SMS_REPLIED"]["count"] == 1


@pytest.mark.parametrize(
    "text", ["STOP", " stop ", "Stop.", "Opt  out", "optout", "STOP ALL", "stopall", "Unsubscribe"]
)
def test_opt_out_keywords_opt_sms_out(profile: Profile, text: str) -> None:
    process(sms_replied_job(reply_text=text, replied_at=at(120)))
    profile.refresh_from_db()
    assert profile.sms_opt_in is False
    change = ConsentChange.objects.get(source="sms_keyword")
    assert (change.channel, change.opted_in, change.occurred_at) == ("sms", False, at(120))
    assert Activity.objects.filter(type=ActivityType.CONSENT_OPTED_OUT, data__source="sms_keyword").count() == 1


@pytest.mark.parametrize("text", ["Please stop calling", "stopping by later", "Yes", "STOP!!! now"])
def test_other_replies_are_not_keywords(text: str) -> None:
    assert sms_opt_out_keyword(text) is None


def test_a_later_opt_in_wins_over_an_older_stop(profile: Profile) -> None:
    process(contact_preference_updated_job(sms_opt_in=True, timestamp=at(200)))
    process(sms_replied_job(reply_text="STOP", replied_at=at(120)))
    profile.refresh_from_db()
    assert profile.sms_opt_in is True
    assert ConsentChange.objects.get(source="sms_keyword").superseded is True


def test_unknown_contact_is_parked(profile: Profile) -> None:
    assert process(sms_replied_job(contact_id="nobody", reply_text="STOP")) == "parked"
    assert not ConsentChange.objects.filter(source="sms_keyword").exists()
