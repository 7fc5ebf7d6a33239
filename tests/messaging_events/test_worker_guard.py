"""The workers never lose a job because of its content: whatever breaks is recorded as a rejection."""

import pytest
from django.db import DataError

from crm.models import ContactLink, Profile
from messaging_events import handlers
from messaging_events.contract.routing import EventType
from messaging_events.models import InboundEvent
from messaging_events.services.inbox import process_batch
from tests.factories import contact_created_job, contact_preference_updated_job, make_job

pytestmark = pytest.mark.django_db


def test_content_postgres_cannot_store_is_recorded_not_raised() -> None:
    surrogate = contact_created_job(event_id="s1", first_name="Ann\ud800")
    nul_name = contact_created_job(event_id="n1", contact_id="c-nul", first_name="Ann\x00")
    infinite = make_job("contact.created", {"payload": {"eventId": "i1", "x": float("inf")}})
    beyond_calendar = {**contact_preference_updated_job(event_id="t1", sms_opt_in=True), "timestamp": 10**20}
    deep: object = "bottom"
    for _ in range(5000):  # deeper than Python's recursion limit: breaks hashing and storing alike
        deep = [deep]
    too_deep = make_job("contact.created", {"payload": {"eventId": "d1"}, "deep": deep}, job_id="deep-1")
    fine = contact_created_job(event_id="ok", contact_id="c-ok", email="ok@example.com")

    result = process_batch([surrogate, nul_name, infinite, beyond_calendar, too_deep, fine])

    assert result.transient == []
    rows = {row.idempotency_key: row for row in InboundEvent.objects.all()}
    assert len(rows) == 6
    unreadable = InboundEvent.objects.get(bullmq_job_id="deep-1")
    assert unreadable.error.startswith("job content could not be processed: RecursionError")
    assert unreadable.raw_data == {"_unreadable": {"head": "<dict that cannot be serialised>"}}
    # A name PostgreSQL cannot hold is an optional field: dropped, with a warning (partial acceptance).
    applied = ("ok", "s1", "n1")
    assert {key: row.status for key, row in rows.items()} == {
        key: "applied" if key in applied else "rejected" for key in rows
    }
    assert rows["n1"].warnings == [
        {"field": "payload.firstName", "problem": "must not contain NUL characters; dropped", "value": '"Ann\\u0000"'}
    ]
    assert rows["t1"].error.startswith("no occurred-at")
    assert rows["s1"].raw_data["payload"]["firstName"] == "Ann\ufffd"  # stored, replaced
    assert rows["s1"].warnings == [
        {
            "field": "payload.firstName",
            "problem": "Input should be a valid string, unable to parse raw data as a unicode string; dropped",
            "value": '"Ann\\ud800"',
        }
    ]
    # The three contacts share a phone number, so they resolve to one profile; the bad names never reach it.
    assert ContactLink.objects.count() == 3
    assert list(Profile.objects.values_list("first_name", flat=True)) == ["John"]


def test_a_value_the_database_refuses_is_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(event, source_event_id):
        raise DataError("value too long for type character varying(32)")

    monkeypatch.setitem(handlers.HANDLERS, EventType.CONTACT_CREATED, refuse)
    process_batch([contact_created_job(event_id="d1")])
    row = InboundEvent.objects.get()
    assert row.status == "rejected"
    assert row.error == "the database refused a value: value too long for type character varying(32)"
