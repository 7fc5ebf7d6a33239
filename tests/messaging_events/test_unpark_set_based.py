"""Parked message events are re-applied set-based (`parking.unpark_contacts` → `batch_apply.replay_set_based`)
with exactly the recorded effect of the per-event replay they replaced: the same inbox rows (status,
deliveries, attempts, job attempts, reason, warnings, applied time, tenant) and the same CRM rows, in a
fixed number of statements per chunk, whatever its size."""

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from bench.inprocess import unpark_one_by_one
from crm.models import Activity
from messaging_events.contract.jobs import parse_job
from messaging_events.models import InboundEvent
from messaging_events.services import batch_apply, inbox, parking
from tests.crm.test_order_independence import tables
from tests.factories import (
    TENANT,
    at,
    contact_created_job,
    email_opened_job,
    message_bounced_job,
    message_delivered_job,
    message_failed_job,
    message_sent_job,
    process,
)
from tests.messaging_events.test_batch_apply import _refuse_interactions_for, campaign, state

pytestmark = pytest.mark.django_db

OTHER_TENANT = "tenant_456"
PEOPLE = {"c-a": TENANT, "c-b": TENANT, "b.c-c": OTHER_TENANT}
GHOST = "c-ghost"  # never signs up: its events stay parked
UNPARKED = [*PEOPLE, GHOST]


def park() -> None:
    """Message events that overtook their contacts' sign-ups, parked by the worker's batch path: campaigns in
    two tenants, an in-batch duplicate, a redelivery and a re-publish of parked events, a tenant mismatch, a
    dropped value (a warning), a hard bounce and a failure (per-event types) and a contact that never comes."""
    jobs = [job for contact_id in PEOPLE for job in campaign(contact_id)] + campaign("c-a", n=1, minute=30)
    jobs += campaign(GHOST)
    jobs += [
        message_delivered_job(contact_id="c-b", message_id="m-c-b-0", tenant_id=OTHER_TENANT, event_id="x-tenant"),
        message_sent_job(contact_id="b.c-c", message_id="m-fax", channel="FAX", sent_at=at(40), event_id="s-fax"),
        message_bounced_job(contact_id="c-a", message_id="m-c-a-0", bounce_type="hard", bounced_at=at(2), event_id="b"),
        message_failed_job(contact_id="c-b", message_id="m-c-b-0", failed_at=at(3), event_id="f"),
    ]
    first, second = jobs[:17], [*jobs[17:], jobs[17]]  # jobs[17] twice in one batch
    for batch in (first, second, [jobs[10], {**jobs[11], "id": "republished", "attemptsMade": 2}]):
        assert batch_apply.apply_batch(batch).statuses == {"parked": len(batch)}


def link() -> None:
    """The sign-ups, applied one by one (no unpark scheduled: the test unparks)."""
    for n, (contact_id, tenant) in enumerate(PEOPLE.items()):
        job = contact_created_job(
            contact_id=contact_id,
            tenant_id=tenant,
            email=f"{contact_id}@example.com",
            phone=f"+2782111000{n}",
            email_opt_in=True,
            timestamp=at(-60 + n),
        )
        assert process(job) == "applied"


def inbox_rows() -> list[tuple]:
    """Every recorded field of every inbox row, but ids and times (applied or not instead)."""
    return sorted(
        (*row[:-1], row[-1] is not None)
        for row in InboundEvent.objects.values_list(
            "tenant_ref",
            "event_type",
            "idempotency_key",
            "status",
            "deliveries",
            "attempts",
            "job_attempts",
            "error",
            "warnings",
            "tenant__external_id",
            "content_hash",
            "conflict",
            "raw_data",
            "applied_at",
        )
    )


def rows() -> dict[str, Any]:
    """The set-based path's own comparison (`test_batch_apply.state`: activities with their source event's
    key, the score-refresh rows), less the ledger row ids in consent activities."""
    rows = state()
    rows["activities"] = sorted(
        (*activity[:3], [item for item in activity[3] if item[0] != "consent_change_id"], *activity[4:])
        for activity in rows["activities"]
    )
    return rows


class _Rollback(Exception):
    pass


def state_after(unpark: Callable[[list[str]], int]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        with transaction.atomic():
            park()
            link()
            assert unpark(UNPARKED) == 29
            result = tables() | {"rows": rows(), "inbox_rows": inbox_rows()}
            raise _Rollback
    except _Rollback:
        pass
    return result


@pytest.mark.parametrize("chunk", [parking.UNPARK_CHUNK, 4])
def test_unparking_set_based_records_exactly_what_the_per_event_replay_records(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = state_after(unpark_one_by_one)

    monkeypatch.setattr(parking, "UNPARK_CHUNK", chunk)
    replayed_alone: list[str] = []
    process_job = inbox.process_job

    def spy(job: dict, **kwargs: Any) -> tuple:
        if kwargs.get("replay"):
            replayed_alone.append(job["name"])
        return process_job(job, **kwargs)

    monkeypatch.setattr(inbox, "process_job", spy)
    fallbacks = batch_apply.fallback_batches()
    actual = state_after(parking.unpark_contacts)

    assert batch_apply.fallback_batches() == fallbacks
    assert sorted(replayed_alone) == ["message.bounced", "message.failed"]  # the rest went set-based
    assert actual == expected
    # The comparison compares something: every outcome is there.
    statuses = {(key, status) for _, _, key, status, *_ in expected["inbox_rows"]}
    assert {("x-tenant", "rejected"), ("s-m-c-ghost-0", "parked"), ("b", "applied"), ("s-fax", "applied")} <= statuses
    rows = {key: row for _, _, key, *row in expected["inbox_rows"]}
    assert rows["s-m-b.c-c-0"][1:4] == [2, 3, 0]  # redelivered while parked: deliveries, attempts, job attempts
    assert rows["d-m-b.c-c-0"][1:4] == [2, 3, 2]  # re-published while parked
    assert rows["o1-m-c-a-1"][1:3] == [2, 2]  # twice in one batch: two deliveries, one try, then the replay
    assert rows["s-m-c-ghost-0"][1:3] == [1, 2]  # tried again, still parked
    assert [warning["field"] for warning in rows["s-fax"][5]] == ["payload.channel"]
    assert len(expected["rows"]["activities"]) == 26 and expected["rows"]["attributions"]


def queries_to_unpark(messages_per_contact: int) -> list[str]:
    """The statements of unparking this many parked messages per contact (three contacts), all applied."""
    captured = CaptureQueriesContext(connection)
    try:
        with transaction.atomic():
            for n in range(messages_per_contact):
                batch_apply.apply_batch([job for contact_id in PEOPLE for job in campaign(contact_id, n=n)])
            link()
            with captured:
                assert parking.unpark_contacts(list(PEOPLE)) == 15 * messages_per_contact
            assert InboundEvent.objects.filter(status="applied").count() == 15 * messages_per_contact + 3
            raise _Rollback
    except _Rollback:
        pass
    return [query["sql"] for query in captured.captured_queries]


def test_a_chunk_of_parked_messages_costs_a_fixed_number_of_statements() -> None:
    small, large = queries_to_unpark(1), queries_to_unpark(8)  # 15 and 120 events: one chunk each
    # the parked rows; a savepoint around the chunk's transaction: claim, links, score-refresh rows,
    # profile locks, activities, message locks, interactions, fill from SENT, attributions, profile
    # timestamps, close (was 10 or more per event)
    assert len(small) == len(large) == 14


def test_a_row_rejected_meanwhile_is_judged_again_as_the_per_event_replay_judges_it() -> None:
    """A replay judges a rejected row again (`inbox._runnable`): the set-based replay too."""

    def replayed(replay: Callable[[dict], object]) -> list[tuple]:
        result: list[tuple] = []
        try:
            with transaction.atomic():
                link()
                job = message_sent_job(contact_id="c-b", message_id="m-x", tenant_id=OTHER_TENANT, event_id="x")
                assert batch_apply.apply_batch([job]).statuses == {"rejected": 1}
                replay(inbox.job_from_row(InboundEvent.objects.get(idempotency_key="x")))
                result = inbox_rows()
                raise _Rollback
        except _Rollback:
            pass
        return result

    expected = replayed(lambda job: inbox.process_job(job, replay=True))
    actual = replayed(lambda job: batch_apply.replay_set_based([(job, parse_job(job))]))
    assert actual == expected
    [row] = [row[3:6] for row in expected if row[2] == "x"]
    assert row == ("rejected", 1, 2)  # judged twice, delivered once


def test_a_chunk_that_raises_is_rolled_back_and_replayed_one_by_one(caplog: pytest.LogCaptureFixture) -> None:
    """As a live batch's fallback: counted and logged, and only the poisoned event ends `failed`."""
    jobs = [*campaign("c-a"), message_sent_job(contact_id="c-b", message_id="m-poison", event_id="p")]
    assert batch_apply.apply_batch(jobs).statuses == {"parked": 6}
    link()
    _refuse_interactions_for("m-poison")
    fallbacks = batch_apply.fallback_batches()

    assert parking.unpark_contacts(list(PEOPLE)) == 6

    assert batch_apply.fallback_batches() == fallbacks + 1
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch_fallback")]
    assert line == f"batch_fallback events=6 fallbacks={fallbacks + 1} error=ProgrammingError sqlstate=P0001"
    rows = {key: (status, deliveries, attempts) for key, status, deliveries, attempts in _messages()}
    assert rows.pop("p")[:2] == ("failed", 1)
    assert set(rows.values()) == {("applied", 1, 2)}  # parked once, applied once, the rolled-back try left nothing


def _messages() -> list[tuple]:
    return list(
        InboundEvent.objects.exclude(event_type="contact.created").values_list(
            "idempotency_key", "status", "deliveries", "attempts"
        )
    )


@pytest.mark.django_db(transaction=True)
def test_unparking_while_a_live_batch_redelivers_the_same_events_applies_each_once() -> None:
    """Two connections released together: the unpark, and a live batch with redeliveries of the parked
    events (in reverse) and new events of the same messages. Whichever claims a row first applies it; the
    other finds it final. Each delivery and effect counts once and neither falls back. (That they cannot
    deadlock follows from the shared lock order, docs/architecture.md; these runs rarely overlap inside one
    claim statement, so they do not prove it: with the unpark's claims in reverse order they still pass.)"""
    for round_ in range(3):
        fallbacks = batch_apply.fallback_batches()
        parked = _race([f"c-race{round_}-{n}" for n in range(4)])
        assert batch_apply.fallback_batches() == fallbacks
        rows = InboundEvent.objects.filter(idempotency_key__in=[job["data"]["payload"]["eventId"] for job in parked])
        assert set(rows.values_list("status", "deliveries", "attempts")) == {("applied", 2, 2)}
    assert Activity.objects.filter(type="EMAIL_OPENED").count() == 3 * 4 * 3


def _race(contacts: list[str]) -> list[dict]:
    """Park a campaign to these contacts, link them, then unpark it while a live batch redelivers it, in
    reverse, with one more open of each message; returns the parked jobs."""
    from tests.messaging_events.test_concurrent_claims import _at_once

    parked = [job for n, contact_id in enumerate(contacts) for job in campaign(contact_id, minute=n)]
    assert batch_apply.apply_batch(parked).statuses == {"parked": len(parked)}
    for contact_id in contacts:
        process(contact_created_job(contact_id=contact_id, email=f"{contact_id}@example.com", timestamp=at(-9)))
    live = [*reversed(parked)] + [
        email_opened_job(contact_id=contact_id, message_id=f"m-{contact_id}-0", event_id=f"late-{contact_id}")
        for contact_id in contacts
    ]
    _at_once(lambda: parking.unpark_contacts(contacts), lambda: batch_apply.apply_batch(live))
    return parked
