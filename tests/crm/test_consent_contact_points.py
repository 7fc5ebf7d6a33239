"""Consent belongs to the contact point (issue 11 §2) and ties and clocks are deterministic (§7).

Every scenario is applied in both arrival orders where order could matter, through the real inbox path.
"""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model

from crm.models import (
    Activity,
    ActivityType,
    ConsentChange,
    ConsentSource,
    ContactAddress,
    MarketingConsent,
    Profile,
)
from crm.services.consent import consent_record_by_staff, consent_statement_record
from crm.services.consent_rebuild import CONSENT_ACTIVITY_TYPES
from crm.services.profiles import profile_update_by_staff
from tests.factories import (
    at,
    contact_created_job,
    contact_preference_updated_job,
    contact_updated_job,
    process,
    sms_replied_job,
)

pytestmark = pytest.mark.django_db

P2, P4, P_NEW = "+27821110002", "+27821110004", "+27821110099"


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("staff", is_staff=True)


def _apply(jobs: list, reverse: bool) -> Profile:
    for job in reversed(jobs) if reverse else jobs:
        process(job)
    return Profile.objects.get()


@pytest.mark.parametrize("reverse", [False, True])
def test_a_shared_mailbox_never_puts_one_persons_sms_consent_on_the_others_phone(reverse: bool) -> None:
    jobs = [
        contact_created_job(
            contact_id="c2", email="bob@example.com", phone=P2, sms_opt_in=False, email_opt_in=True, timestamp=at(0)
        ),
        contact_created_job(
            contact_id="c4", email="bob@example.com", phone=P4, sms_opt_in=True, email_opt_in=True, timestamp=at(10)
        ),
        # c4 states no address: it is about c4's own phone.
        contact_preference_updated_job(contact_id="c4", sms_opt_in=True, timestamp=at(20)),
    ]
    profile = _apply(jobs, reverse)
    assert profile.phone == P2  # c2's contact.created is the earlier event
    assert profile.sms_opt_in is False
    assert profile.email_opt_in is True  # the mailbox is shared: both statements are about it
    ledger = sorted(ConsentChange.objects.filter(channel="sms").values_list("contact_id", "address", "address_stated"))
    assert ledger == [("c2", P2, True), ("c4", P4, False), ("c4", P4, True)]
    state = MarketingConsent.objects.get(channel="sms")
    assert (state.address, state.opted_in, state.deciding_change.contact_id) == (P2, False, "c2")


@pytest.mark.parametrize("reverse", [False, True])
def test_a_preference_before_its_contact_is_about_the_phone_the_contact_then_had(reverse: bool) -> None:
    jobs = [
        contact_preference_updated_job(contact_id="c1", sms_opt_in=False, timestamp=at(5)),
        contact_created_job(contact_id="c1", email="ann@example.com", phone=None, sms_opt_in=True, timestamp=at(0)),
        # The phone becomes known only at 10.
        contact_updated_job(contact_id="c1", phone=P_NEW, timestamp=at(10)),
    ]
    profile = _apply(jobs, reverse)
    assert profile.phone == P_NEW
    # Neither event states a phone: both are about the phone c1 had then, which is the first one it
    # stated (nothing earlier is known). The opt-out at 5 is the latest.
    assert profile.sms_opt_in is False
    rows = dict(ConsentChange.objects.filter(channel="sms").values_list("occurred_at", "address"))
    assert rows == {at(0): P_NEW, at(5): P_NEW}
    assert list(ContactAddress.objects.filter(kind="phone").values_list("contact_id", "address")) == [("c1", P_NEW)]
    # The timeline agrees with the ledger: each activity names the phone its statement turned out to be about.
    activities = Activity.objects.filter(type__in=CONSENT_ACTIVITY_TYPES, data__channel="sms")
    assert sorted((a.occurred_at, a.type, a.data["address"]) for a in activities) == [
        (at(0), ActivityType.CONSENT_OPTED_IN, P_NEW),
        (at(5), ActivityType.CONSENT_OPTED_OUT, P_NEW),
    ]


def test_a_new_address_starts_unknown_and_the_old_one_counts_again(staff) -> None:
    process(contact_created_job(contact_id="c1", phone=P2, sms_opt_in=True, email_opt_in=True, timestamp=at(0)))
    profile = Profile.objects.get()

    profile_update_by_staff(profile=profile, changes={"phone": P_NEW}, user=staff)
    profile.refresh_from_db()
    assert (profile.sms_opt_in, profile.email_opt_in) == (None, True)
    assert not MarketingConsent.objects.filter(channel="sms").exists()

    # A statement about the old phone changes nothing now ...
    process(contact_preference_updated_job(contact_id="c1", sms_opt_in=False, timestamp=at(5)))
    profile.refresh_from_db()
    assert profile.sms_opt_in is None
    assert ConsentChange.objects.get(occurred_at=at(5)).superseded is True
    # ... a statement about the new one decides it ...
    consent_record_by_staff(profile=profile, channel="sms", opted_in=True, user=staff, lawful_basis="asked")
    profile.refresh_from_db()
    assert profile.sms_opt_in is True
    assert MarketingConsent.objects.get(channel="sms").address == P_NEW

    # ... and back on the old phone, its own ledger decides again (the opt-out at 5 is its latest).
    profile_update_by_staff(profile=profile, changes={"phone": P2}, user=staff)
    profile.refresh_from_db()
    assert profile.sms_opt_in is False
    state = MarketingConsent.objects.get(channel="sms")
    assert (state.address, state.changed_at) == (P2, at(5))


# -- §7 ties and clocks -------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
def test_at_equal_times_an_opt_out_beats_an_opt_in(reverse: bool) -> None:
    jobs = [
        contact_created_job(contact_id="c1", phone=P2, timestamp=at(0)),
        contact_preference_updated_job(contact_id="c1", event_id="evt_99", sms_opt_in=False, timestamp=at(10)),
        contact_preference_updated_job(contact_id="c1", event_id="evt_100", sms_opt_in=True, timestamp=at(10)),
    ]
    if reverse:
        jobs = [jobs[0], jobs[2], jobs[1]]
    profile = _apply(jobs, reverse=False)
    assert profile.sms_opt_in is False
    jobs_swapped = [
        contact_created_job(contact_id="c2", email="two@example.com", phone=P4, timestamp=at(0)),
        contact_preference_updated_job(contact_id="c2", event_id="other_99", sms_opt_in=True, timestamp=at(10)),
        contact_preference_updated_job(contact_id="c2", event_id="other_100", sms_opt_in=False, timestamp=at(10)),
    ]
    for job in jobs_swapped:
        process(job)
    assert Profile.objects.get(phone=P4).sms_opt_in is False


@pytest.mark.parametrize("reverse", [False, True])
def test_at_equal_times_staff_precede_the_messaging_service_and_a_later_receipt_an_earlier(
    reverse: bool, staff
) -> None:
    process(contact_created_job(contact_id="c1", phone=P2, timestamp=at(0)))
    profile = Profile.objects.get()
    replies = [
        # Both STOPs happened at 30; evt_100 was received later, so it decides (not the string "evt_99").
        sms_replied_job(contact_id="c1", event_id="evt_99", reply_text="STOP", replied_at=at(30), timestamp=at(31)),
        sms_replied_job(contact_id="c1", event_id="evt_100", reply_text="STOP", replied_at=at(30), timestamp=at(32)),
    ]
    for job in reversed(replies) if reverse else replies:
        process(job)
    state = MarketingConsent.objects.get(channel="sms")
    assert state.deciding_change.source_event.idempotency_key == "evt_100"

    statements = [
        {"source": ConsentSource.ADMIN, "source_key": "staff:1", "actor_id": staff.pk},
        {"source": ConsentSource.MESSAGING_EVENT, "source_key": "contactPreference.updated:zzz"},
    ]
    for statement in reversed(statements) if reverse else statements:
        consent_statement_record(profile=profile, channel="email", opted_in=False, occurred_at=at(40), **statement)
    state = MarketingConsent.objects.get(channel="email")
    assert (state.source, state.deciding_change.source) == ("admin", "admin")


@pytest.mark.parametrize("reverse", [False, True])
def test_a_future_occurred_at_is_ordered_at_its_receipt_with_a_warning(reverse: bool) -> None:
    process(contact_created_job(contact_id="c1", phone=P2, sms_opt_in=True, timestamp=at(0)))
    jobs = [
        # Claims to have happened a day after it was received.
        sms_replied_job(contact_id="c1", event_id="stop", reply_text="STOP", replied_at=at(days=1), timestamp=at(10)),
        # A real opt-in after that receipt, before the claimed time.
        contact_preference_updated_job(contact_id="c1", event_id="back", sms_opt_in=True, timestamp=at(60)),
    ]
    for job in reversed(jobs) if reverse else jobs:
        process(job)
    assert Profile.objects.get().sms_opt_in is True
    stop = ConsentChange.objects.get(source="sms_keyword")
    assert (stop.occurred_at, stop.received_at) == (at(days=1), at(10))  # the raw value is kept
    assert "later than its receipt" in stop.warning
    assert ConsentChange.objects.get(source_event__idempotency_key="back").warning == ""
    assert ConsentChange.objects.filter(superseded=False).count() == 3 - int(reverse)


def test_an_occurred_at_before_its_receipt_is_no_warning() -> None:
    process(contact_created_job(contact_id="c1", phone=P2, timestamp=at(0)))
    process(
        sms_replied_job(contact_id="c1", reply_text="STOP", replied_at=at(10), timestamp=at(10) + timedelta(seconds=1))
    )
    stop = ConsentChange.objects.get()
    assert (stop.warning, Profile.objects.get().sms_opt_in) == ("", False)
