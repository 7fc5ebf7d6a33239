"""Two workers at the same moment, as two database connections in threads: the same event delivered
twice, two events upserting one interaction, and a consent change racing a merge."""

import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection

from crm.models import Activity, ActivityType, CampaignInteraction, ConsentChange, ContactLink, InteractionType, Profile
from messaging_events import handlers
from messaging_events.contract.jobs import BridgedJob
from messaging_events.contract.routing import EventType
from messaging_events.models import InboundEvent
from messaging_events.services import batch_apply
from tests.factories import (
    at,
    contact_created_job,
    contact_preference_updated_job,
    contact_updated_job,
    email_opened_job,
    message_delivered_job,
    message_sent_job,
    process,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _at_once(*calls: Callable[[], object]) -> list[object]:
    """Run the calls in threads released together; each thread has its own connection."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(n: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait()
            results[n] = call()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n, call)) for n, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_the_same_event_delivered_twice_at_the_same_moment_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    process(contact_created_job(contact_id="c-dup", email="dup@example.com", timestamp=at(0)))
    real = handlers.HANDLERS[EventType.EMAIL_OPENED]
    runs: list[str] = []

    def slow_open(event, source_event_id):
        runs.append(event.idempotency_key)
        time.sleep(0.3)  # hold the claimed row's lock while the other delivery arrives
        return real(event, source_event_id)

    monkeypatch.setitem(handlers.HANDLERS, EventType.EMAIL_OPENED, slow_open)
    job = email_opened_job(contact_id="c-dup", message_id="m-dup", event_id="open-dup")

    assert _at_once(lambda: process(job), lambda: process(job)) == ["applied", "applied"]

    assert runs == ["open-dup"], "the second delivery waited on the row lock and found it final"
    row = InboundEvent.objects.get(idempotency_key="open-dup")
    assert (row.status, row.deliveries, row.attempts) == ("applied", 2, 1)
    assert Activity.objects.filter(type=ActivityType.EMAIL_OPENED).count() == 1
    assert CampaignInteraction.objects.get(message_id="m-dup", type=InteractionType.OPENED).count == 1


def test_two_events_upserting_one_interaction_at_once_both_count() -> None:
    process(contact_created_job(contact_id="c-int", email="int@example.com", timestamp=at(0)))
    for round_ in range(5):
        message = f"m-int-{round_}"
        first = email_opened_job(contact_id="c-int", message_id=message, opened_at=at(10), event_id=f"{message}-a")
        second = email_opened_job(contact_id="c-int", message_id=message, opened_at=at(20), event_id=f"{message}-b")

        assert _at_once(lambda a=first: process(a), lambda b=second: process(b)) == ["applied", "applied"]

        interaction = CampaignInteraction.objects.get(message_id=message, type=InteractionType.OPENED)
        assert (interaction.count, interaction.first_at, interaction.last_at) == (2, at(10), at(20))
    assert Activity.objects.filter(type=ActivityType.EMAIL_OPENED).count() == 10


def _consent_state(tenant: str) -> dict:
    profiles = Profile.objects.filter(tenant__external_id=tenant)
    profile = profiles.get()  # the stub was merged: one person, one profile
    return {
        "contacts": sorted(ContactLink.objects.filter(profile=profile).values_list("messaging_contact_id", flat=True)),
        "opt_ins": (profile.email_opt_in, profile.sms_opt_in),
        "ledger": sorted(
            (c.channel, c.opted_in, c.occurred_at.isoformat(), c.source)
            for c in ConsentChange.objects.filter(profile=profile)
        ),
    }


def _merge_and_consent_jobs(tenant: str) -> tuple[list[dict], list[dict]]:
    """Ann is known as c1; c2 exists only as a stub (an update with her phone). Then, together:
    c2's contact.created (same email: the stub merges into Ann) and an opt-in change on c1."""
    setup = [
        contact_created_job(
            contact_id=f"{tenant}-c1", tenant_id=tenant, email="ann@example.com", phone=None, timestamp=at(0)
        ),
        contact_updated_job(
            contact_id=f"{tenant}-c2", tenant_id=tenant, phone="+27821110002", email_opt_in=False, timestamp=at(5)
        ),
    ]
    racing = [
        contact_created_job(
            contact_id=f"{tenant}-c2",
            tenant_id=tenant,
            email="ann@example.com",
            phone=None,
            sms_opt_in=True,
            timestamp=at(3),
        ),
        contact_preference_updated_job(
            contact_id=f"{tenant}-c1", tenant_id=tenant, email_opt_in=True, timestamp=at(10)
        ),
    ]
    return setup, racing


def test_a_consent_change_racing_a_merge_ends_as_if_applied_one_after_the_other() -> None:
    setup, racing = _merge_and_consent_jobs("t-seq")
    for job in [*setup, *racing]:
        assert process(job) == "applied"
    sequential = _consent_state("t-seq")
    assert sequential["opt_ins"] == (True, True)  # the opt-in at 10 beats c2's opt-out at 5

    for round_ in range(5):
        tenant = f"t-race-{round_}"
        setup, racing = _merge_and_consent_jobs(tenant)
        for job in setup:
            process(job)

        assert _at_once(*[lambda j=job: process(j) for job in racing]) == ["applied", "applied"]

        state = _consent_state(tenant)
        assert state["opt_ins"] == sequential["opt_ins"], round_
        assert state["ledger"] == sequential["ledger"], round_
        assert [c.removeprefix(f"{tenant}-") for c in state["contacts"]] == ["c1", "c2"]


def _lock_waiters() -> int:
    """Backends waiting for a lock right now (pg_locks is read live, even inside a transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return cursor.fetchone()[0]


def _apply(job: BridgedJob, path: str) -> str:
    if path == "per-event":
        return process(job)
    (status,) = batch_apply.apply_batch([job]).statuses
    return status


@pytest.mark.parametrize("second_path", ["per-event", "set-based"])
@pytest.mark.parametrize("first_path", ["per-event", "set-based"])
@pytest.mark.parametrize("first_kind", [EventType.MESSAGE_SENT, EventType.MESSAGE_DELIVERED])
def test_a_send_and_a_delivery_of_one_message_applied_at_once_both_get_the_campaign(
    monkeypatch: pytest.MonkeyPatch, first_kind: EventType, first_path: str, second_path: str
) -> None:
    """The first event's transaction has written its interaction and stays open until the second is
    either waiting for a lock or done; only then does it commit. Each transaction then cannot see the
    other's row unless they are serialised: the delivery must still end with the send's campaign."""
    process(contact_created_job(contact_id="c-camp", email="camp@example.com", timestamp=at(0)))
    sent = message_sent_job(contact_id="c-camp", message_id="m-camp", campaign_id="camp-1", event_id="camp-sent")
    delivered = message_delivered_job(contact_id="c-camp", message_id="m-camp", event_id="camp-delivered")
    first, second = (sent, delivered) if first_kind == EventType.MESSAGE_SENT else (delivered, sent)
    first_thread: list[threading.Thread] = []
    first_wrote, second_done = threading.Event(), threading.Event()
    seen: list[str] = []

    def hold_open_until_the_second_waits_or_ends() -> None:
        first_wrote.set()
        deadline = time.monotonic() + 30
        while not second_done.is_set() and time.monotonic() < deadline:
            if _lock_waiters():
                seen.append("second waited for the first")
                return
            time.sleep(0.01)
        seen.append("second ended while the first was open")

    def holding(real: Callable[..., object]) -> Callable[..., object]:
        def hook(*args: object, **kwargs: object) -> object:
            result = real(*args, **kwargs)
            if threading.current_thread() in first_thread:
                hold_open_until_the_second_waits_or_ends()
            return result

        return hook

    if first_path == "per-event":
        monkeypatch.setitem(handlers.HANDLERS, first_kind, holding(handlers.HANDLERS[first_kind]))
    else:
        monkeypatch.setattr(batch_apply, "message_records_apply", holding(batch_apply.message_records_apply))
    fallbacks = batch_apply.fallback_batches()

    def run_first() -> str:
        first_thread.append(threading.current_thread())
        return _apply(first, first_path)

    def run_second_once_the_first_wrote() -> str:
        assert first_wrote.wait(30)
        try:
            return _apply(second, second_path)
        finally:
            second_done.set()

    assert _at_once(run_first, run_second_once_the_first_wrote) == ["applied", "applied"]

    interactions = CampaignInteraction.objects.filter(message_id="m-camp")
    assert {i.type: (i.campaign_id, i.count) for i in interactions} == {
        InteractionType.SENT: ("camp-1", 1),
        InteractionType.DELIVERED: ("camp-1", 1),
    }
    assert seen == ["second waited for the first"]
    assert batch_apply.fallback_batches() == fallbacks, "no deadlock, no fallback"


def _hold_after(
    real: Callable[..., object],
    holder: list[threading.Thread],
    wrote: threading.Event,
    other_done: threading.Event,
    seen: list[str],
) -> Callable[..., object]:
    """`real`, which in the holder's thread keeps its transaction open afterwards until the other
    thread waits for a lock (or ends)."""

    def hook(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)
        if threading.current_thread() in holder:
            wrote.set()
            deadline = time.monotonic() + 30
            while not other_done.is_set() and time.monotonic() < deadline:
                if _lock_waiters():
                    seen.append("the other waited")
                    return result
                time.sleep(0.01)
            seen.append("the other ended while this one was open")
        return result

    return hook


def _race(
    first: Callable[[], str],
    second: Callable[[], str],
    wrote: threading.Event,
    second_done: threading.Event,
    holder: list[threading.Thread],
) -> list[object]:
    def run_first() -> str:
        holder.append(threading.current_thread())
        return first()

    def run_second_once_the_first_wrote() -> str:
        assert wrote.wait(30)
        try:
            return second()
        finally:
            second_done.set()

    return _at_once(run_first, run_second_once_the_first_wrote)


@pytest.mark.parametrize("message_path", ["per-event", "set-based"])
def test_a_message_event_for_a_contact_being_linked_waits_for_the_link(
    monkeypatch: pytest.MonkeyPatch, message_path: str
) -> None:
    """The contact.created has written the link and holds its transaction open: the message event must
    not park (the created event already looked for parked events to re-apply); it waits and applies."""
    created = contact_created_job(contact_id="c-link", email="link@example.com", timestamp=at(0))
    sent = message_sent_job(contact_id="c-link", message_id="m-link", event_id="link-sent")
    holder: list[threading.Thread] = []
    wrote, second_done, seen = threading.Event(), threading.Event(), []
    real = handlers.HANDLERS[EventType.CONTACT_CREATED]
    monkeypatch.setitem(
        handlers.HANDLERS, EventType.CONTACT_CREATED, _hold_after(real, holder, wrote, second_done, seen)
    )

    statuses = _race(lambda: process(created), lambda: _apply(sent, message_path), wrote, second_done, holder)

    assert statuses == ["applied", "applied"]
    assert seen == ["the other waited"]
    assert InboundEvent.objects.get(idempotency_key="link-sent").status == "applied"


@pytest.mark.parametrize("message_path", ["per-event", "set-based"])
def test_a_contact_link_waits_for_a_message_event_parking_for_it(
    monkeypatch: pytest.MonkeyPatch, message_path: str
) -> None:
    """The message event decided to park and holds its transaction open: the contact.created must wait
    for that park to commit, so that its own look for parked events (after its commit) finds it."""
    created = contact_created_job(contact_id="c-park", email="park@example.com", timestamp=at(0))
    sent = message_sent_job(contact_id="c-park", message_id="m-park", event_id="park-sent")
    holder: list[threading.Thread] = []
    wrote, second_done, seen = threading.Event(), threading.Event(), []
    if message_path == "per-event":
        real = handlers.HANDLERS[EventType.MESSAGE_SENT]
        monkeypatch.setitem(
            handlers.HANDLERS, EventType.MESSAGE_SENT, _hold_after(real, holder, wrote, second_done, seen)
        )
    else:
        real = batch_apply.message_records_apply
        monkeypatch.setattr(batch_apply, "message_records_apply", _hold_after(real, holder, wrote, second_done, seen))

    statuses = _race(lambda: _apply(sent, message_path), lambda: process(created), wrote, second_done, holder)

    assert statuses == ["parked", "applied"]
    assert seen == ["the other waited"]
    assert ContactLink.objects.filter(messaging_contact_id="c-park").exists()
