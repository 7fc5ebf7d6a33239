"""The inbox row and log line of each outcome, exactly: what the mutation run (docs/testing.md, "Mutation
testing") found the other inbox tests left unpinned — columns cut to their size, attempts and applied-at
per outcome, the job rebuilt from a row, the batch's counts, and the structured log line."""

import logging
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, DataError, OperationalError
from prometheus_client import REGISTRY

from messaging_events import handlers
from messaging_events.contract.routing import EventType
from messaging_events.models import InboundEvent
from messaging_events.services import inbox
from tests.factories import at, contact_created_job, make_job

pytestmark = pytest.mark.django_db


def _row() -> InboundEvent:
    return InboundEvent.objects.get()


def test_a_long_job_id_and_name_are_stored_cut_to_their_columns() -> None:
    job = make_job("n" * 200, {"payload": {"tenantId": "t1"}}, timestamp=at(0), job_id="i" * 100)
    assert inbox.process_job(job)[0] == "rejected"
    row = _row()
    assert (row.bullmq_job_id, row.job_name, row.event_type) == ("i" * 64, "n" * 128, "n" * 64)


def test_attempts_and_applied_at_follow_the_outcome() -> None:
    status, outcome = inbox.process_job(contact_created_job(event_id="e1", timestamp=at(0)))
    assert status == "applied" and outcome is not None
    applied = InboundEvent.objects.get(idempotency_key="e1")
    assert (applied.attempts, applied.deliveries, applied.error, applied.warnings) == (1, 1, "created", [])
    assert applied.applied_at is not None
    assert applied.tenant.external_id == "tenant_123"

    rejected_job = make_job("contact.created", {"payload": {"tenantId": "tenant_123"}}, job_id="r1")
    assert inbox.process_job(rejected_job)[0] == "rejected"
    rejected = InboundEvent.objects.get(bullmq_job_id="r1")
    assert (rejected.attempts, rejected.applied_at, rejected.tenant_id) == (1, None, applied.tenant_id)

    # A job that kept hitting transient errors ends failed without a new attempt counted.
    failing = contact_created_job(event_id="e2", contact_id="c2", timestamp=at(1))
    inbox.record_failure(failing, "OperationalError: the database went away")
    failed = InboundEvent.objects.get(idempotency_key="e2")
    assert (failed.status, failed.attempts, failed.deliveries, failed.applied_at) == ("failed", 0, 1, None)
    assert failed.error == "OperationalError: the database went away"
    assert failed.tenant_id == applied.tenant_id
    # ... and a final row is never turned failed afterwards.
    inbox.record_failure(contact_created_job(event_id="e1", timestamp=at(0)), "late")
    again = InboundEvent.objects.get(idempotency_key="e1")
    assert (again.status, again.error, again.applied_at) == ("applied", "created", applied.applied_at)
    assert again.deliveries == 1  # a failure record is not a delivery


def test_a_rejection_naming_no_tenant_is_seen_by_its_contacts_tenant() -> None:
    inbox.process_job(contact_created_job(contact_id="c1", event_id="e1", timestamp=at(0)))
    tenant_id = _row().tenant_id
    bad = make_job("message.sent", {"type": "message.sent", "identity": {"messagingContactId": "c1"}}, job_id="b1")
    assert inbox.process_job(bad)[0] == "rejected"
    assert InboundEvent.objects.get(bullmq_job_id="b1").tenant_id == tenant_id
    stranger = make_job("message.sent", {"type": "message.sent", "identity": {"messagingContactId": "c9"}})
    inbox.process_job({**stranger, "id": "b2"})
    assert InboundEvent.objects.get(bullmq_job_id="b2").tenant_id is None


def test_the_job_rebuilt_from_a_row_is_the_job_received() -> None:
    job = contact_created_job(event_id="e1", timestamp=at(0))
    job = {**job, "attemptsMade": 3}
    inbox.process_job(job)
    rebuilt = inbox.job_from_row(_row())
    assert rebuilt == {**job, "key": "e1"}

    # Without a job name or time (rows from before they were kept): the type and occurred-at stand in.
    InboundEvent.objects.update(job_name="", job_timestamp=None)
    rebuilt = inbox.job_from_row(_row())
    assert (rebuilt["name"], rebuilt["timestamp"]) == ("contact.created", int(at(0).timestamp() * 1000))
    assert "rejection" not in rebuilt


def test_a_row_of_unreadable_data_rebuilds_its_rejection() -> None:
    job = make_job("contact.created", {"_oversized": True, "bytes": 9_000_000}, job_id="u1")
    inbox.process_job({**job, "rejection": "the job data is larger than the bridge forwards"})
    row = _row()
    assert row.status == "rejected"
    assert inbox.job_from_row(row)["rejection"] == row.error == "the job data is larger than the bridge forwards"


def test_a_batch_counts_each_status_and_collects_the_linked_contacts() -> None:
    jobs = [
        contact_created_job(contact_id="c1", event_id="e1", timestamp=at(0)),
        contact_created_job(contact_id="c2", event_id="e2", email="jane@example.com", phone=None, timestamp=at(0)),
        make_job("no.such.event", {"payload": {}}, job_id="x1"),
        contact_created_job(contact_id="c1", event_id="e1", timestamp=at(0)),
    ]
    result = inbox.process_batch(jobs)
    assert result.statuses == {"applied": 3, "rejected": 1}
    assert result.linked_contact_ids == {"c1", "c2"}
    assert result.transient == []


def test_a_job_whose_content_breaks_the_inbox_is_recorded_as_unreadable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_claim = inbox._claim
    calls = []

    def claim(parsed: Any, **kwargs: Any) -> inbox.Claim:
        calls.append(parsed.job.job_id)
        if len(calls) == 1:  # the job as received; its unreadable record then goes through
            raise ValueError("a value beyond the contract")
        return real_claim(parsed, **kwargs)

    monkeypatch.setattr(inbox, "_claim", claim)
    job = make_job("contact.created", {"payload": {"eventId": "e1"}}, timestamp=at(0), job_id="boom")
    result = inbox.process_batch([{**job, "attemptsMade": 2}])
    assert result.statuses == {"rejected": 1}
    row = _row()
    assert (row.status, row.bullmq_job_id, row.job_name, row.job_timestamp, row.job_attempts) == (
        "rejected",
        "boom",
        "contact.created",
        at(0),
        2,
    )
    assert "ValueError: a value beyond the contract" in row.error
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == ["event_unprocessable job=boom"]


def _log(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    (record,) = [r for r in caplog.records if r.name == inbox.logger.name and r.msg.startswith("event_")]
    return record


def test_an_applied_event_logs_its_ids_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=inbox.logger.name)
    inbox.process_job(contact_created_job(event_id="e1", contact_id="c1", timestamp=at(0)))
    record = _log(caplog)
    assert (record.levelno, record.getMessage()) == (logging.INFO, "event_applied")
    fields = {name: getattr(record, name) for name in ("event_type", "key", "status", "tenant", "contact", "reason")}
    assert fields == {
        "event_type": "contact.created",
        "key": "e1",
        "status": "applied",
        "tenant": "tenant_123",
        "contact": "c1",
        "reason": "",
    }
    assert record.job == _row().bullmq_job_id
    assert record.warnings == ""
    assert isinstance(record.duration_ms, float) and record.duration_ms >= 0


def test_a_rejected_event_logs_its_reason_without_personal_data_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=inbox.logger.name)
    inbox.process_job(make_job("john@example.com", {"payload": {}}, job_id="r1"))
    record = _log(caplog)
    assert _row().error == "unknown event type 'john@example.com'"
    assert (record.levelno, record.getMessage(), record.status) == (logging.WARNING, "event_rejected", "rejected")
    assert record.reason.startswith("unknown event type")
    assert "john@example.com" not in record.reason


def _lines(caplog: pytest.LogCaptureFixture, prefix: str) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith(prefix)]


def _handler_raising(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def broken(event: Any, row_id: int) -> None:
        raise error

    monkeypatch.setitem(handlers.HANDLERS, EventType.CONTACT_CREATED, broken)


def test_a_handler_bug_is_failed_reported_with_its_ids_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inbox.process_job(contact_created_job(contact_id="c0", event_id="e0", timestamp=at(0)))  # the tenant exists
    reported: list[tuple[BaseException, dict[str, Any]]] = []
    monkeypatch.setattr(inbox.error_tracking, "report", lambda exc, **tags: reported.append((exc, tags)))
    bug = RuntimeError("a bug in one handler")
    _handler_raising(monkeypatch, bug)
    status, outcome = inbox.process_job(contact_created_job(contact_id="c1", event_id="e1", timestamp=at(1)))
    assert status == "failed" and outcome is not None
    assert reported == [(bug, {"event_type": "contact.created", "key": "e1"})]
    row = InboundEvent.objects.get(idempotency_key="e1")
    assert (row.status, row.error, row.attempts) == ("failed", "internal error: RuntimeError: a bug in one handler", 1)
    assert row.tenant_id == InboundEvent.objects.get(idempotency_key="e0").tenant_id
    assert _lines(caplog, "event_failed key") == [(logging.ERROR, "event_failed key=e1 type=contact.created")]


def test_a_database_error_fails_the_event_and_a_refused_value_rejects_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _handler_raising(monkeypatch, DatabaseError("relation is broken"))
    assert inbox.process_job(contact_created_job(contact_id="c1", event_id="e1", timestamp=at(0)))[0] == "failed"
    assert InboundEvent.objects.get(idempotency_key="e1").error == "database error: relation is broken"
    assert _lines(caplog, "event_failed key") == [(logging.ERROR, "event_failed key=e1 type=contact.created")]

    _handler_raising(monkeypatch, DataError("value too long"))
    assert inbox.process_job(contact_created_job(contact_id="c2", event_id="e2", timestamp=at(0)))[0] == "rejected"
    row = InboundEvent.objects.get(idempotency_key="e2")
    assert (row.status, row.error) == ("rejected", "the database refused a value: value too long")


def test_a_conflicting_copy_is_logged_with_its_ids(caplog: pytest.LogCaptureFixture) -> None:
    inbox.process_job(contact_created_job(event_id="e1", email="a@example.com", timestamp=at(0)))
    other = {**contact_created_job(event_id="e1", email="b@example.com", timestamp=at(0)), "id": "j2"}
    assert inbox.process_job(other) == ("applied", None)
    assert _lines(caplog, "event_conflict") == [(logging.WARNING, "event_conflict key=e1 type=contact.created job=j2")]


def test_the_soft_time_limit_hands_back_the_event_and_every_one_not_reached(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = handlers.HANDLERS[EventType.CONTACT_CREATED]

    def slow(event: Any, row_id: int) -> Any:
        if event.idempotency_key == "e2":
            raise SoftTimeLimitExceeded()
        return real(event, row_id)

    monkeypatch.setitem(handlers.HANDLERS, EventType.CONTACT_CREATED, slow)
    jobs = [contact_created_job(contact_id=f"c{n}", event_id=f"e{n}", timestamp=at(n)) for n in (1, 2, 3)]
    result = inbox.process_batch(jobs)
    assert result.statuses == {"applied": 1}
    assert result.transient == [(jobs[1], inbox.TIME_LIMIT_ERROR), (jobs[2], inbox.TIME_LIMIT_ERROR)]
    assert list(InboundEvent.objects.values_list("idempotency_key", flat=True)) == ["e1"]
    assert _lines(caplog, "batch_soft_time_limit") == [(logging.WARNING, "batch_soft_time_limit unfinished=2")]


def test_a_failing_copy_with_other_content_opens_a_conflict_and_keeps_the_rows_content() -> None:
    inbox.process_job(contact_created_job(event_id="e1", email="a@example.com", timestamp=at(0)))
    applied = _row()
    other = contact_created_job(event_id="e1", email="b@example.com", timestamp=at(0))
    inbox.record_failure(other, "OperationalError: the database went away")
    row = _row()
    assert (row.status, row.error, row.content_hash) == ("applied", "created", applied.content_hash)
    assert (row.conflict, row.conflict_data) == ("open", other["data"])
    assert row.conflict_hash not in ("", applied.content_hash)


def _transient_count() -> float:
    return (
        REGISTRY.get_sample_value(
            "crm_events_processed_total", {"event_type": "contact.created", "outcome": "transient"}
        )
        or 0.0
    )


def test_a_transient_error_is_handed_back_counted_and_logged_with_the_job_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _handler_raising(monkeypatch, OperationalError("the database went away"))
    job = contact_created_job(event_id="e1", timestamp=at(0))
    before = _transient_count()
    result = inbox.process_batch([job])
    assert result.transient == [(job, "OperationalError: the database went away")]
    assert _transient_count() == before + 1
    expected = f"event_transient_error job={job['id']} error=OperationalError"
    assert _lines(caplog, "event_transient_error") == [(logging.WARNING, expected)]


def test_each_outcome_is_counted_by_event_type() -> None:
    def applied() -> float:
        labels = {"event_type": "contact.created", "outcome": "applied"}
        return REGISTRY.get_sample_value("crm_events_processed_total", labels) or 0.0

    before = applied()
    inbox.process_job(contact_created_job(event_id="e1", timestamp=at(0)))
    assert applied() == before + 1


def test_finite_numbers_are_stored_as_received_and_non_finite_ones_as_null() -> None:
    job = make_job("no.such.event", {"payload": {"score": 1.5, "ratio": float("nan"), "n": 2}}, job_id="f1")
    inbox.process_job(job)
    assert _row().raw_data == {"payload": {"score": 1.5, "ratio": None, "n": 2}}
