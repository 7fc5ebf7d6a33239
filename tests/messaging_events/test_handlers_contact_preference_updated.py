"""contactPreference.updated: consent flags, MarketingConsent, CONSENT_* activity, segment membership."""

import pytest

from crm.models import (
    Activity,
    ActivityType,
    ConsentChange,
    ContactLink,
    MarketingConsent,
    Profile,
    Segment,
    SegmentMembership,
)
from tests.factories import (
    at,
    contact_created_job,
    contact_preference_updated_job,
    email_opened_job,
    process,
)

pytestmark = pytest.mark.django_db


def _consent_activities() -> list[tuple[str, str, bool]]:
    rows = Activity.objects.filter(type__in=(ActivityType.CONSENT_OPTED_IN, ActivityType.CONSENT_OPTED_OUT)).order_by(
        "occurred_at", "id"
    )
    return [(a.type, a.data["channel"], a.data["opted_in"]) for a in rows]


def test_opt_in_updates_flag_state_ledger_activity_and_segment() -> None:
    process(contact_created_job(sms_opt_in=False, timestamp=at(0)))
    profile = Profile.objects.get()
    segment = Segment.objects.create(tenant_id=profile.tenant_id, name="SMS", required_consent_channel="sms")
    assert not SegmentMembership.objects.exists()

    assert process(contact_preference_updated_job(event_id="evt_125", sms_opt_in=True, timestamp=at(10))) == "applied"
    profile.refresh_from_db()
    assert profile.sms_opt_in is True and profile.email_opt_in is None  # only the field present is touched
    state = MarketingConsent.objects.get(channel="sms")
    assert (state.opted_in, state.changed_at, state.source) == (True, at(10), "messaging_event")
    assert state.deciding_change.source_event.idempotency_key == "evt_125"
    assert ConsentChange.objects.filter(channel="sms").count() == 2
    assert _consent_activities() == [
        (ActivityType.CONSENT_OPTED_OUT, "sms", False),
        (ActivityType.CONSENT_OPTED_IN, "sms", True),
    ]
    assert list(SegmentMembership.objects.values_list("segment_id", "profile_id")) == [(segment.pk, profile.pk)]

    process(contact_preference_updated_job(event_id="evt_126", sms_opt_in=False, timestamp=at(20)))
    assert not SegmentMembership.objects.exists()
    assert [t for t, *_ in _consent_activities()][-1] == ActivityType.CONSENT_OPTED_OUT


def test_older_statement_is_recorded_superseded_and_changes_nothing() -> None:
    process(contact_created_job(timestamp=at(0)))
    process(contact_preference_updated_job(event_id="new", email_opt_in=False, timestamp=at(20)))
    process(contact_preference_updated_job(event_id="old", email_opt_in=True, timestamp=at(10)))
    profile = Profile.objects.get()
    assert profile.email_opt_in is False
    ledger = {c.source_event.idempotency_key: c.superseded for c in ConsentChange.objects.all()}
    assert ledger == {"new": False, "old": True}
    # the timeline follows occurred-at order: opted in at 10, opted out at 20
    assert _consent_activities() == [
        (ActivityType.CONSENT_OPTED_IN, "email", True),
        (ActivityType.CONSENT_OPTED_OUT, "email", False),
    ]


def test_same_value_again_is_no_real_change() -> None:
    process(contact_created_job(email_opt_in=True, timestamp=at(0)))
    process(contact_preference_updated_job(email_opt_in=True, timestamp=at(10)))
    assert ConsentChange.objects.count() == 2
    assert _consent_activities() == [(ActivityType.CONSENT_OPTED_IN, "email", True)]
    assert MarketingConsent.objects.get().changed_at == at(10)


def test_consent_before_contact_creates_stub_and_unparks_nothing_lost() -> None:
    process(email_opened_job(contact_id="c9", message_id="m1"))  # parked: unknown contact
    assert process(contact_preference_updated_job(contact_id="c9", whatsapp_opt_in=False)) == "applied"
    profile = ContactLink.objects.get(messaging_contact_id="c9").profile
    assert profile.is_stub and profile.whatsapp_opt_in is False

    from messaging_events.services.parking import unpark_contacts

    assert unpark_contacts(["c9"]) == 1
    assert Activity.objects.filter(profile=profile, type=ActivityType.EMAIL_OPENED).count() == 1


def test_duplicate_delivery_one_statement() -> None:
    process(contact_created_job(timestamp=at(0)))
    job = contact_preference_updated_job(event_id="evt_125", sms_opt_in=True, timestamp=at(10))
    process(job)
    process(job)
    assert ConsentChange.objects.filter(channel="sms").count() == 1
    assert Activity.objects.filter(type=ActivityType.CONSENT_OPTED_IN).count() == 1
