"""Event identity (docs/decisions.md): the job timestamp identifies events without an eventId, the
type is part of the identity, and the same identity with other content is a visible conflict."""

import pytest

from crm.models import ConsentChange, Profile
from messaging_events.models import ConflictState, InboundEvent
from messaging_events.services.status import bridge_status_get
from tests.factories import at, contact_created_job, contact_preference_updated_job, process

pytestmark = pytest.mark.django_db


def test_opt_out_opt_in_opt_out_without_event_ids_keeps_the_last_choice() -> None:
    process(contact_created_job(sms_opt_in=True, timestamp=at(0)))
    for minute, value in ((1, False), (2, True), (3, False)):
        assert process(contact_preference_updated_job(sms_opt_in=value, timestamp=at(minute))) == "applied"
    assert InboundEvent.objects.filter(event_type="contactPreference.updated", status="applied").count() == 3
    assert Profile.objects.get().sms_opt_in is False
    assert ConsentChange.objects.filter(channel="sms").count() == 4


def test_a_redelivery_of_the_same_job_is_a_duplicate() -> None:
    job = contact_preference_updated_job(sms_opt_in=False, timestamp=at(1))
    assert process(job) == "applied"
    assert process(dict(job)) == "applied"  # the same row, not applied twice
    row = InboundEvent.objects.get()
    assert (row.deliveries, row.attempts, row.conflict) == (2, 1, "")
    assert ConsentChange.objects.count() == 1


def test_one_event_id_for_two_types_records_both_events() -> None:
    process(contact_created_job(event_id="evt_1", sms_opt_in=True, timestamp=at(0)))
    assert process(contact_preference_updated_job(event_id="evt_1", sms_opt_in=False, timestamp=at(0))) == "applied"
    assert sorted(InboundEvent.objects.values_list("event_type", "status")) == [
        ("contact.created", "applied"),
        ("contactPreference.updated", "applied"),
    ]
    assert ConsentChange.objects.filter(channel="sms").count() == 2


def test_same_identity_other_content_is_an_open_conflict_that_changes_nothing() -> None:
    first = contact_preference_updated_job(event_id="evt_9", sms_opt_in=False, timestamp=at(1))
    other = contact_preference_updated_job(event_id="evt_9", sms_opt_in=True, timestamp=at(2))
    assert process(first) == "applied"
    assert process(other) == "applied"  # the row's status: the other content was not applied
    assert process(other) == "applied"  # its redelivery is no second conflict

    row = InboundEvent.objects.get()
    assert row.conflict == ConflictState.OPEN
    assert row.raw_data == first["data"] and row.conflict_data == other["data"]
    assert row.conflict_job_timestamp == at(2) and row.deliveries == 3
    assert Profile.objects.get().sms_opt_in is False
    assert ConsentChange.objects.count() == 1

    status = bridge_status_get()
    assert status.open_conflicts == 1
    assert any("1 inbox event(s) with an open conflict" in problem for problem in status.problems)


def test_a_replay_with_corrected_data_is_not_a_conflict() -> None:
    from messaging_events.services.inbox import job_from_row, process_job

    process(contact_preference_updated_job(event_id="evt_5", sms_opt_in=False, timestamp=at(1)))
    row = InboundEvent.objects.get()
    row.raw_data["payload"]["emailOptIn"] = True
    row.save()
    process_job(job_from_row(row), replay=True)
    row.refresh_from_db()
    assert row.conflict == "" and row.conflict_data is None
