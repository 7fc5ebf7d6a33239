"""The inbox through the task: redeliveries change nothing, transient errors are retried, then
recorded as failed; replays of applied events do nothing; effects and inbox row commit together."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import OperationalError
from django.test import override_settings

from crm.models import Activity, ContactLink, MarketingConsent, Profile
from messaging_events import handlers
from messaging_events.contract.routing import EventType
from messaging_events.models import InboundEvent
from messaging_events.services import inbox, parking
from messaging_events.tasks import apply_event_batch, unpark_contact_events
from tests.messaging_events.samples import contact_job, contact_payloads, message_job, message_payloads

JOB_TS = 1765699200000  # 2025-12-14T08:00:00Z

pytestmark = pytest.mark.django_db


def bridged(job: dict[str, Any], job_id: str = "1", attempts: int = 0) -> dict[str, Any]:
    return {"id": job_id, "name": job["name"], "timestamp": JOB_TS, "attemptsMade": attempts, "data": job["data"]}


def created(prefix: str = "inbox", contact: str = "c-inbox") -> dict[str, Any]:
    return bridged(contact_job("contact.created", contact_payloads(contact=contact, prefix=prefix)["contact.created"]))


def run_task(jobs: list[dict[str, Any]], **kwargs: Any) -> Any:
    """Run the task in-process as a worker would (retries run eagerly, without their countdown)."""
    return apply_event_batch.apply(args=[jobs], kwargs=kwargs)


def crm_state() -> dict[str, Any]:
    return {
        "profiles": list(Profile.objects.order_by("pk").values()),
        "links": list(ContactLink.objects.order_by("pk").values()),
        "activities": Activity.objects.count(),
        "consents": list(MarketingConsent.objects.order_by("pk").values()),
    }


def test_a_redelivery_increments_deliveries_and_changes_nothing() -> None:
    job = created()
    assert run_task([job]).get() == {"applied": 1}
    row = InboundEvent.objects.get()
    before, state = row, crm_state()
    assert state["profiles"]
    assert row.deliveries == 1
    assert row.attempts == 1

    # Celery redelivers the message; and the producer republishes the event as a new BullMQ job.
    assert run_task([job]).get() == {"applied": 1}
    assert run_task([{**job, "id": "977", "attemptsMade": 2}]).get() == {"applied": 1}

    row = InboundEvent.objects.get()
    assert row.deliveries == 3
    assert row.attempts == 1  # the handler never ran again
    assert row.status == "applied"
    assert row.applied_at == before.applied_at
    assert row.bullmq_job_id == "1"
    assert row.job_attempts == 2
    assert crm_state() == state


def test_redelivered_rejection_stays_one_rejected_row() -> None:
    job = bridged({"name": "no.such.event", "data": {"payload": {"x": 1}}})
    assert run_task([job, job]).get() == {"rejected": 2}
    row = InboundEvent.objects.get()
    assert row.status == "rejected"
    assert row.deliveries == 2
    assert row.error == "unknown event type 'no.such.event'"


def test_one_bad_event_never_fails_its_batch_mates(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(event, source_event_id):
        raise RuntimeError("a bug in one handler")

    monkeypatch.setitem(handlers.HANDLERS, EventType.CONTACT_DELETED, broken)
    deleted = bridged(contact_job("contact.deleted", contact_payloads(prefix="x")["contact.deleted"]), job_id="2")
    rejected = bridged({"name": "contact.created", "data": "nope"}, job_id="3")
    assert run_task([created(), deleted, rejected]).get() == {"applied": 1, "failed": 1, "rejected": 1}
    failed = InboundEvent.objects.get(status="failed")
    assert failed.error == "internal error: RuntimeError: a bug in one handler"


@pytest.fixture
def flaky_contact_created(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """contact.created does its real work, then hits a transient database error `fail_times` times."""
    real = handlers.HANDLERS[EventType.CONTACT_CREATED]
    calls = {"n": 0, "fail_times": 0}

    def flaky(event, source_event_id):
        outcome = real(event, source_event_id)  # effects written inside the event's transaction...
        calls["n"] += 1
        if calls["n"] <= calls["fail_times"]:
            raise OperationalError("canceling statement due to lock timeout")  # ...then rolled back with it
        return outcome

    monkeypatch.setitem(handlers.HANDLERS, EventType.CONTACT_CREATED, flaky)
    yield calls


@override_settings(EVENT_TASK_MAX_RETRIES=3)
def test_a_transient_database_error_is_retried_by_the_task(flaky_contact_created: dict[str, int]) -> None:
    flaky_contact_created["fail_times"] = 2
    other = bridged(contact_job("contact.deleted", contact_payloads(prefix="ok")["contact.deleted"]), job_id="5")
    result = run_task([created(), other])
    assert flaky_contact_created["n"] == 3
    assert result.get() == {"applied": 1}  # the last retry, which carried only the failed event
    row = InboundEvent.objects.get(event_type="contact.created")
    assert row.status == "applied"
    assert row.deliveries == 1  # the failed attempts rolled back with their row
    assert InboundEvent.objects.get(event_type="contact.deleted").deliveries == 1  # not re-sent in the retry
    assert Profile.objects.count() == 1


def test_effects_and_inbox_row_roll_back_together(flaky_contact_created: dict[str, int]) -> None:
    flaky_contact_created["fail_times"] = 1
    jobs = [created()]
    result = inbox.process_batch(jobs)
    assert [job for job, _ in result.transient] == jobs
    assert "OperationalError: canceling statement due to lock timeout" in result.transient[0][1]
    assert InboundEvent.objects.count() == 0
    assert crm_state() == {"profiles": [], "links": [], "activities": 0, "consents": []}


def test_a_handler_that_breaks_after_writing_leaves_nothing_but_its_recorded_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No savepoint around the handler: the event's transaction rolls back as a whole and the row is
    claimed and recorded again, so the delivery and the attempt count once and no effect is left."""
    real = handlers.HANDLERS[EventType.CONTACT_CREATED]

    def breaks_after_writing(event, source_event_id):
        real(event, source_event_id)
        raise RuntimeError("a bug after the writes")

    monkeypatch.setitem(handlers.HANDLERS, EventType.CONTACT_CREATED, breaks_after_writing)
    later = bridged(contact_job("contact.deleted", contact_payloads(prefix="ok")["contact.deleted"]), job_id="5")
    assert inbox.process_batch([created(), later]).statuses == {"failed": 1, "ignored": 1}
    row = InboundEvent.objects.get(event_type="contact.created")
    assert (row.status, row.deliveries, row.attempts) == ("failed", 1, 1)
    assert row.error == "internal error: RuntimeError: a bug after the writes"
    assert row.tenant_id is None  # the tenant its handler created rolled back with the rest
    assert crm_state() == {"profiles": [], "links": [], "activities": 0, "consents": []}


@override_settings(EVENT_TASK_MAX_RETRIES=2, EVENT_TASK_RETRY_BACKOFF_MAX_S=1)
def test_failure_is_recorded_after_max_retries_and_can_be_replayed(flaky_contact_created: dict[str, int]) -> None:
    flaky_contact_created["fail_times"] = 1_000
    job = created()
    assert run_task([job]).get() == {"failed": 1}
    assert flaky_contact_created["n"] == 3  # the first try and 2 retries
    row = InboundEvent.objects.get()
    assert row.status == "failed"
    assert row.error.startswith("gave up after 2 retries: OperationalError: canceling statement due to lock timeout")
    assert row.applied_at is None
    assert Profile.objects.count() == 0

    # Replayable: once the cause is gone, a replay applies it.
    flaky_contact_created["fail_times"] = 0
    assert run_task([inbox.job_from_row(row)], replay=True).get() == {"applied": 1}
    row.refresh_from_db()
    assert row.status == "applied"
    assert "gave up" not in row.error  # the applied outcome's note replaced the failure
    assert row.deliveries == 1  # a replay is not a delivery
    assert Profile.objects.count() == 1


@override_settings(EVENT_TASK_MAX_RETRIES=1, EVENT_TASK_RETRY_BACKOFF_MAX_S=1)
def test_events_are_never_acknowledged_unrecorded_while_the_database_is_down(
    flaky_contact_created: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When even the `failed` record cannot be written, the task keeps retrying instead of dropping."""
    flaky_contact_created["fail_times"] = 3  # the try, the retry, and the retry after the failed record
    real_record_failure = inbox.record_failure
    outage = {"left": 1}

    def record_failure_while_down(job: dict[str, Any], error: str) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise OperationalError("connection refused")
        real_record_failure(job, error)

    monkeypatch.setattr(inbox, "record_failure", record_failure_while_down)
    result = run_task([created()])
    # The first give-up could not be recorded, so the task went on retrying; the next give-up was recorded.
    assert result.get() == {"failed": 1}
    assert flaky_contact_created["n"] == 3  # the try, the retry, and one more after the unrecordable give-up
    assert InboundEvent.objects.get().status == "failed"


def test_replay_of_an_applied_event_does_nothing() -> None:
    run_task([created()]).get()
    row = InboundEvent.objects.get()
    state = crm_state()
    assert run_task([inbox.job_from_row(row)], replay=True).get() == {"applied": 1}
    again = InboundEvent.objects.get()
    # (Only updated_at moves: the claim's upsert touches it.)
    assert (again.status, again.attempts, again.deliveries, again.applied_at, again.error) == (
        row.status,
        row.attempts,
        row.deliveries,
        row.applied_at,
        row.error,
    )
    assert crm_state() == state


def test_replay_rejudges_a_rejection() -> None:
    job = created(prefix="rej")
    job["data"]["payload"]["smsOptIn"] = "no"  # a consent flag that is not a boolean rejects
    run_task([job]).get()
    row = InboundEvent.objects.get()
    assert row.status == "rejected"
    row.raw_data["payload"]["smsOptIn"] = False  # an operator corrected the data
    row.save()
    assert run_task([inbox.job_from_row(row)], replay=True).get() == {"applied": 1}


def test_parked_event_redelivered_stays_parked_then_applies_when_its_contact_arrives(
    django_capture_on_commit_callbacks, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = bridged(message_job("email.opened", message_payloads(contact="c-late")["email.opened"], contact="c-late"))
    assert run_task([opened]).get() == {"parked": 1}
    assert run_task([opened]).get() == {"parked": 1}
    row = InboundEvent.objects.get()
    assert (row.status, row.deliveries, row.attempts) == ("parked", 2, 2)
    scheduled: list[list[str]] = []
    monkeypatch.setattr(parking, "schedule_unpark", scheduled.append)
    with django_capture_on_commit_callbacks(execute=True):
        run_task([created(prefix="late", contact="c-late")]).get()
    assert scheduled == [["c-late"]]  # the task asks for the contact's parked events after commit
    assert unpark_contact_events.apply(args=[scheduled[0]]).get() == 1
    row.refresh_from_db()
    assert row.status == "applied", row.error
