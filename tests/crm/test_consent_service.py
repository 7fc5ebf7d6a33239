"""The consent ledger: staff changes, last-writer-wins, ties, and the timeline reconciled from the ledger."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from crm.errors import ApplicationError
from crm.models import (
    Activity,
    ActivityType,
    ConsentChange,
    MarketingConsent,
    Profile,
)
from crm.services.consent import consent_record_by_staff, consent_statement_record
from crm.services.consent_order import consent_tiebreak
from crm.services.tenants import tenant_get_or_create
from tests.factories import at, contact_created_job, contact_preference_updated_job, process

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("staff", is_staff=True)


def _timeline(channel: str) -> list[tuple[str, bool]]:
    rows = Activity.objects.filter(
        type__in=(ActivityType.CONSENT_OPTED_IN, ActivityType.CONSENT_OPTED_OUT), data__channel=channel
    ).order_by("occurred_at", "id")
    return [(a.occurred_at, a.data["opted_in"]) for a in rows]


def test_staff_change_goes_through_the_ledger_with_the_user(staff) -> None:
    process(contact_created_job(email_opt_in=True, timestamp=at(0)))
    profile = Profile.objects.get()
    consent_record_by_staff(
        profile=profile, channel="email", opted_in=False, user=staff, lawful_basis="phoned the helpdesk"
    )
    profile.refresh_from_db()
    assert profile.email_opt_in is False
    change = ConsentChange.objects.get(source="admin")
    assert (change.actor_id, change.lawful_basis, change.opted_in, change.superseded) == (
        staff.pk,
        "phoned the helpdesk",
        False,
        False,
    )
    assert timezone.now() - change.occurred_at < timedelta(minutes=1)
    state = MarketingConsent.objects.get(channel="email")
    assert (state.source, state.deciding_change_id) == ("admin", change.pk)
    assert Activity.objects.filter(type=ActivityType.CONSENT_OPTED_OUT, data__source="admin").count() == 1
    # An older Messaging statement arriving later does not override the staff decision.
    process(contact_preference_updated_job(email_opt_in=True, timestamp=at(10)))
    profile.refresh_from_db()
    assert profile.email_opt_in is False
    assert ConsentChange.objects.get(source="messaging_event", occurred_at=at(10)).superseded is True


def test_staff_change_rejects_unknown_channel(staff) -> None:
    profile = Profile.objects.create(tenant=tenant_get_or_create("t1"))
    with pytest.raises(ApplicationError):
        consent_record_by_staff(profile=profile, channel="fax", opted_in=True, user=staff, lawful_basis="")


def test_same_statement_twice_is_recorded_once() -> None:
    profile = Profile.objects.create(tenant=tenant_get_or_create("t1"))
    kwargs = {
        "profile": profile,
        "channel": "sms",
        "opted_in": True,
        "occurred_at": at(0),
        "source": "messaging_event",
        "source_key": "k1",
    }
    assert consent_statement_record(**kwargs).recorded is True
    assert consent_statement_record(**kwargs).recorded is False
    assert ConsentChange.objects.count() == 1


def test_ties_at_the_same_time_are_deterministic() -> None:
    tenant = tenant_get_or_create("t1")
    results = []
    for order in (("a", "b"), ("b", "a")):
        profile = Profile.objects.create(tenant=tenant)
        for key in order:
            consent_statement_record(
                profile=profile,
                channel="sms",
                opted_in=key == "a",
                occurred_at=at(0),
                source="messaging_event",
                source_key=key,
            )
        profile.refresh_from_db()
        results.append(profile.sms_opt_in)
    winner = max(("a", "b"), key=lambda k: consent_tiebreak(source="messaging_event", source_key=k, occurred_at=at(0)))
    assert results == [winner == "a"] * 2


def test_late_statement_in_the_middle_reconciles_the_timeline() -> None:
    process(contact_created_job(timestamp=at(0)))
    process(contact_preference_updated_job(event_id="p1", sms_opt_in=True, timestamp=at(10)))
    process(contact_preference_updated_job(event_id="p3", sms_opt_in=True, timestamp=at(30)))
    assert _timeline("sms") == [(at(10), True)]
    process(contact_preference_updated_job(event_id="p2", sms_opt_in=False, timestamp=at(20)))
    assert Profile.objects.get().sms_opt_in is True
    assert _timeline("sms") == [(at(10), True), (at(20), False), (at(30), True)]
    # ... and an even older opt-in at the start removes nothing but marks no change at 10.
    process(contact_preference_updated_job(event_id="p0", sms_opt_in=True, timestamp=at(5)))
    assert _timeline("sms") == [(at(5), True), (at(20), False), (at(30), True)]
    assert ConsentChange.objects.filter(channel="sms", superseded=True).count() == 2
