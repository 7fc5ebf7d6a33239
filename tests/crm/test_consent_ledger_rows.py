"""The consent ledger's exact rows and activities: what the mutation run (docs/testing.md, "Mutation testing")
found the other consent tests left unpinned — a statement's stored identity, the staff path's row, the
consent activity's data, and the timeline rebuilt for one profile among several."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model

from crm.errors import ApplicationError
from crm.models import Activity, ActivityType, ConsentChange, MarketingConsent, Profile
from crm.services.consent import consent_record_by_staff, consent_statement_record
from crm.services.consent_order import consent_tiebreak
from crm.services.tenants import tenant_get_or_create
from messaging_events.models import InboundEvent
from tests.factories import at, contact_created_job, contact_preference_updated_job, process, sms_replied_job

pytestmark = pytest.mark.django_db

# BASE_TIME (tests.factories) in microseconds since the epoch.
BASE_MICROS = 1_765_699_200_000_000


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("staff", is_staff=True)


def _consent_activities(profile: Profile, channel: str) -> list[tuple[str, object, bool, int]]:
    rows = Activity.objects.filter(
        profile=profile,
        type__in=(ActivityType.CONSENT_OPTED_IN, ActivityType.CONSENT_OPTED_OUT),
        data__channel=channel,
    ).order_by("occurred_at", "id")
    return [(a.type, a.occurred_at, a.data["opted_in"], a.data["consent_change_id"]) for a in rows]


def test_a_statements_identity_is_its_source_key_and_occurred_at_to_the_microsecond() -> None:
    assert (
        consent_tiebreak(source="messaging_event", source_key="k1", occurred_at=at(0) + timedelta(microseconds=7))
        == f"messaging_event:k1@{BASE_MICROS + 7}"
    )


def test_an_identity_longer_than_160_characters_is_stored_as_its_source_and_hash() -> None:
    profile = Profile.objects.create(tenant=tenant_get_or_create("t1"))
    fits = "k" * 127  # "messaging_event:" + key + "@" + 16 digits: exactly 160 characters
    too_long_a, too_long_b = "a" * 127 + "x", "a" * 127 + "y"
    for key in (fits, too_long_a, too_long_b):
        consent_statement_record(
            profile=profile, channel="sms", opted_in=True, occurred_at=at(0), source="messaging_event", source_key=key
        )
    tiebreaks = list(ConsentChange.objects.order_by("id").values_list("tiebreak", flat=True))
    assert tiebreaks[0] == f"messaging_event:{fits}@{BASE_MICROS}"
    assert len(tiebreaks[0]) == 160
    for hashed in tiebreaks[1:]:
        assert hashed.startswith("messaging_event:sha256:")
        assert len(hashed) == len("messaging_event:sha256:") + 64
    assert tiebreaks[1] != tiebreaks[2]  # two long keys stay two statements


def test_a_consent_activity_carries_its_statement() -> None:
    process(contact_created_job(email="John@Example.com", email_opt_in=True, timestamp=at(0)))
    profile = Profile.objects.get()
    change = ConsentChange.objects.get(channel="email")
    activity = Activity.objects.get(profile=profile, type=ActivityType.CONSENT_OPTED_IN)
    assert (activity.occurred_at, activity.source_event_id) == (at(0), InboundEvent.objects.get().pk)
    assert activity.data == {
        "channel": "email",
        "opted_in": True,
        "source": "messaging_event",
        "address": "john@example.com",
        "consent_change_id": change.pk,
    }


def test_a_staff_statement_is_received_when_it_occurs_and_each_is_its_own(staff) -> None:
    process(contact_created_job(sms_opt_in=True, timestamp=at(0)))
    profile = Profile.objects.get()
    consent_record_by_staff(profile=profile, channel="sms", opted_in=False, user=staff, lawful_basis="asked")
    consent_record_by_staff(profile=profile, channel="sms", opted_in=True, user=staff, lawful_basis="")
    first, second = ConsentChange.objects.filter(source="admin").order_by("id")
    for change in (first, second):
        assert change.received_at == change.occurred_at
        assert change.tiebreak.startswith(f"admin:staff:{staff.pk}:")
        assert (change.actor_id, change.address, change.address_stated, change.warning, change.superseded) == (
            staff.pk,
            "+27821234567",
            True,
            "",
            False,
        )
    assert (first.opted_in, first.lawful_basis, second.opted_in, second.lawful_basis) == (False, "asked", True, "")
    profile.refresh_from_db()
    assert profile.sms_opt_in is True
    assert [row[:3] for row in _consent_activities(profile, "sms")] == [
        (ActivityType.CONSENT_OPTED_IN, at(0), True),
        (ActivityType.CONSENT_OPTED_OUT, first.occurred_at, False),
        (ActivityType.CONSENT_OPTED_IN, second.occurred_at, True),
    ]


@pytest.mark.parametrize("opted_in", ["yes", 1, None])
def test_a_staff_statement_must_be_true_or_false(staff, opted_in) -> None:
    process(contact_created_job(sms_opt_in=True, timestamp=at(0)))
    profile = Profile.objects.get()
    with pytest.raises(ApplicationError, match=r"^opted_in must be true or false$"):
        consent_record_by_staff(profile=profile, channel="sms", opted_in=opted_in, user=staff, lawful_basis="x")
    with pytest.raises(ApplicationError, match=r"^unknown consent channel 'fax'$"):
        consent_record_by_staff(profile=profile, channel="fax", opted_in=True, user=staff, lawful_basis="x")
    assert not ConsentChange.objects.filter(source="admin").exists()
    assert Profile.objects.get().sms_opt_in is True


def test_a_late_statement_rebuilds_only_its_own_profiles_timeline() -> None:
    # Two contacts, two profiles, the same sms history; a late opt-out lands in the middle of one.
    for contact, phone in (("c1", "+27821110001"), ("c2", "+27821110002")):
        process(contact_created_job(contact_id=contact, email=None, phone=phone, timestamp=at(0)))
        process(contact_preference_updated_job(contact_id=contact, sms_opt_in=True, timestamp=at(10)))
        process(contact_preference_updated_job(contact_id=contact, sms_opt_in=True, timestamp=at(30)))
    one, two = Profile.objects.order_by("id")
    two_before = _consent_activities(two, "sms")
    kept = Activity.objects.get(profile=one, type=ActivityType.CONSENT_OPTED_IN).pk
    process(contact_preference_updated_job(contact_id="c1", sms_opt_in=False, timestamp=at(20)))

    ledger = {c.occurred_at: c.pk for c in ConsentChange.objects.filter(profile=one, channel="sms")}
    assert _consent_activities(one, "sms") == [
        (ActivityType.CONSENT_OPTED_IN, at(10), True, ledger[at(10)]),
        (ActivityType.CONSENT_OPTED_OUT, at(20), False, ledger[at(20)]),
        (ActivityType.CONSENT_OPTED_IN, at(30), True, ledger[at(30)]),
    ]
    # The activity that still marks a real change is kept, not deleted and made again.
    assert Activity.objects.filter(pk=kept, occurred_at=at(10)).exists()
    assert _consent_activities(two, "sms") == two_before
    assert len(two_before) == 1
    assert MarketingConsent.objects.get(profile=one, channel="sms").deciding_change_id == ledger[at(30)]


def test_a_channel_without_an_address_states_no_address() -> None:
    process(contact_created_job(push_opt_in=True, timestamp=at(0)))
    change = ConsentChange.objects.get(channel="push")
    assert (change.address, change.address_stated, change.superseded) == ("", True, False)
    assert Profile.objects.get().push_opt_in is True


def test_a_future_occurred_at_is_recorded_with_the_reason_it_was_ordered_at_its_receipt() -> None:
    process(contact_created_job(contact_id="c1", timestamp=at(0)))
    process(sms_replied_job(contact_id="c1", reply_text="STOP", replied_at=at(days=1), timestamp=at(10)))
    assert ConsentChange.objects.get(source="sms_keyword").warning == (
        f"occurred-at {at(days=1).isoformat()} is later than its receipt at {at(10).isoformat()}: "
        "ordered at the receipt"
    )
