"""Set-based sign-ups (`batch_apply.apply_batch` with `batch_signups`): the `contact.created` of new contacts
applied together write exactly what the per-event path writes, row by row and with the same sources, and a
batch of them costs a fixed number of statements whatever its size."""

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction

from crm.models import Activity, ConsentChange, ContactAddress, MarketingConsent, Profile, Segment, Tenant
from crm.services.locks import contact_identities_wait
from crm.services.tenants import tenant_get_or_create, tenants_create
from messaging_events.models import InboundEvent
from messaging_events.services import batch_apply, inbox
from messaging_events.services.parking import unpark_contacts
from tests.crm.test_order_independence import final_state, tables
from tests.factories import (
    at,
    contact_created_job,
    contact_preference_updated_job,
    contact_updated_job,
    message_delivered_job,
    message_sent_job,
)

pytestmark = pytest.mark.django_db


def signup(contact_id: str, n: int, **fields: Any) -> dict:
    values: dict[str, Any] = {
        "email": f"{contact_id}@example.com",
        "phone": f"+2782777{n:04d}",
        "first_name": "Ann",
        "last_name": None,
        "email_opt_in": True,
        "sms_opt_in": n % 2 == 0,
    }
    return contact_created_job(
        contact_id=contact_id, event_id=f"signup-{contact_id}", timestamp=at(n), **values | fields
    )


def batches() -> tuple[list[list[dict]], dict[str, str]]:
    """Three batches, and what the middle one's sign-ups must do: "set" (set-based) or "per" (per event)."""
    earlier = signup("s-old", 0)
    republished = signup("s-2", 2, push_opt_in=False)
    first = [
        earlier,
        message_sent_job(contact_id="s-4", message_id="m-4", sent_at=at(1), event_id="sent-4"),  # parked
    ]
    middle = [
        signup("s-1", 1),
        signup("s-1", 1),  # an in-batch duplicate: the same job again
        republished,
        {**republished, "id": f"{republished['id']}-again"},  # the same event in a new BullMQ job
        signup("s-3", 3, email=None),
        signup("s-4", 4, first_name=None, sms_opt_in=None),  # its message waits, parked
        signup("s-5", 5, email_opt_in=None, sms_opt_in=None),  # no consent at all
        signup("s-6", 6, tenant_id="tenant_456", phone=None),  # another tenant
        message_delivered_job(contact_id="s-5", message_id="m-5", delivered_at=at(9), event_id="delivered-5"),
        # two sign-ups sharing an email: per event
        signup("s-shared-a", 7, email="shared@example.com"),
        signup("s-shared-b", 8, email="shared@example.com", sms_opt_in=True),
        # a sign-up with a contact.updated of it in the same batch: per event
        signup("s-updated", 10),
        contact_updated_job(contact_id="s-updated", first_name="Jo", event_id="update-1", timestamp=at(11)),
        # a sign-up with a preference change of it in the same batch: per event
        signup("s-pref", 12),
        contact_preference_updated_job(contact_id="s-pref", email_opt_in=False, event_id="pref-1", timestamp=at(13)),
        earlier,  # a redelivery of an applied sign-up: its contact is known, so per event (a duplicate)
        message_sent_job(contact_id="s-1", message_id="m-1", sent_at=at(14), event_id="sent-1"),
    ]
    last = [signup("s-1", 1), message_delivered_job(contact_id="s-4", message_id="m-4", event_id="delivered-4")]
    expected = {"s-1": "set", "s-2": "set", "s-3": "set", "s-4": "set", "s-5": "set", "s-6": "set"}
    expected |= dict.fromkeys(("s-shared-a", "s-shared-b", "s-updated", "s-pref", "s-old"), "per")
    return [first, middle, last], expected


def full_tables() -> dict:
    """The order property's `tables()` plus what it leaves out: every row's source (the inbox row, by its
    identity), the applied events' notes, the field provenance, the stated addresses, tenants and links."""
    state = tables()
    key_of = {row.pk: (row.event_type, row.idempotency_key) for row in InboundEvent.objects.all()}
    contact_of = {
        p.pk: tuple(sorted(p.contact_links.values_list("messaging_contact_id", flat=True)))
        for p in Profile.objects.all()
    }
    state["inbox_full"] = sorted(
        InboundEvent.objects.values_list(
            "tenant_ref",
            "event_type",
            "idempotency_key",
            "status",
            "error",
            "deliveries",
            "attempts",
            "tenant__external_id",
            "bullmq_job_id",
            "warnings",
            "conflict",
        )
    )
    state["applied_at_set"] = sorted(
        (row.idempotency_key, row.status, row.applied_at is not None) for row in InboundEvent.objects.all()
    )
    state["ledger_sources"] = sorted(
        (contact_of[c.profile_id], c.channel, c.tiebreak, key_of.get(c.source_event_id), c.superseded, c.warning)
        for c in ConsentChange.objects.all()
    )
    state["states"] = sorted(
        (contact_of[m.profile_id], m.channel, m.opted_in, m.address, m.deciding_change.tiebreak)
        for m in MarketingConsent.objects.select_related("deciding_change")
    )
    state["activity_sources"] = sorted(
        (contact_of[a.profile_id], a.type, a.occurred_at.isoformat(), key_of.get(a.source_event_id))
        for a in Activity.objects.all()
    )
    state["field_sources"] = sorted((contact_of[p.pk], sorted(p.field_sources.items())) for p in Profile.objects.all())
    state["addresses"] = sorted(
        ContactAddress.objects.values_list(
            "tenant__external_id", "contact_id", "kind", "address", "occurred_at", "source_key"
        )
    )
    state["tenants"] = sorted(Tenant.objects.values_list("external_id", "name"))
    return state


def run(apply: Callable[[list[dict]], Any], jobs: list[list[dict]]) -> Callable[[], None]:
    """Each batch through `apply`, then the parked events of the contacts it linked (the task's `schedule_unpark`)."""

    def go() -> None:
        for batch in jobs:
            result = apply(batch)
            unpark_contacts(sorted(result.linked_contact_ids))

    return go


def test_set_based_sign_ups_write_what_the_per_event_path_writes() -> None:
    jobs, expected = batches()
    applied_before = batch_apply.set_based_signups()
    fallbacks = batch_apply.fallback_batches()
    set_based = final_state(run(batch_apply.apply_batch, jobs), full_tables)
    assert batch_apply.fallback_batches() == fallbacks
    set_based_count = batch_apply.set_based_signups() - applied_before
    per_event = final_state(run(inbox.process_batch, jobs), full_tables)
    assert set(set_based) == set(per_event)
    for name in per_event:
        assert set_based[name] == per_event[name], name
    # the middle batch's new contacts; none in the first (one sign-up) or the last (s-1 is known by then)
    assert set_based_count == sum(1 for how in expected.values() if how == "set")
    # The comparison compares something: every sign-up applied, the parked message applied after it, a
    # duplicate counted, consent recorded with its source, a segment joined.
    inbox_rows = {(row[1], row[2]): row for row in per_event["inbox_full"]}
    assert inbox_rows[("contact.created", "signup-s-1")][3:6] == ("applied", "created", 3)
    assert inbox_rows[("contact.created", "signup-s-2")][5] == 2
    assert inbox_rows[("contact.created", "signup-s-old")][5] == 2
    assert inbox_rows[("message.sent", "sent-4")][3] == "applied"
    assert inbox_rows[("message.delivered", "delivered-5")][3] == "applied"
    assert ("tenant_123", ("s-1",)) in per_event
    assert (("s-1",), "email") in {
        row[:2] for row in per_event["ledger_sources"] if row[3] == ("contact.created", "signup-s-1")
    }
    assert per_event[("tenant_123", ("s-1",))]["segments"] == ["email"]


def test_the_plan_each_sign_up_gets() -> None:
    """Which sign-ups the middle batch applies set-based: new contacts sharing nothing with a per-event event."""
    jobs, expected = batches()
    tenant_get_or_create("tenant_123")
    batch_apply.apply_batch(jobs[0])
    from messaging_events.contract.jobs import Event, parse_job
    from messaging_events.services.batch_signups import signups_select

    parsed = [parse_job(job) for job in jobs[1]]
    others = [p for p in parsed if not (isinstance(p, Event) and p.type in batch_apply.SET_BASED_TYPES)]
    chosen = {event.contact_id for event in signups_select(others)}
    assert chosen == {contact for contact, how in expected.items() if how == "set"}


class _Statements:
    """Counts every statement sent on the database connection: Django's cursors and the bulk writer's
    psycopg cursor alike (`execute`, `executemany` and each `COPY`). BEGIN and COMMIT are not counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sql: list[str] = []
        for name in ("execute", "executemany", "copy"):
            original = getattr(psycopg.Cursor, name)
            monkeypatch.setattr(psycopg.Cursor, name, self._counting(original))

    def _counting(self, original: Callable) -> Callable:
        def counted(cursor: psycopg.Cursor, query: Any, *args: Any, **kwargs: Any) -> Any:
            self.sql.append(str(query)[:120])
            return original(cursor, query, *args, **kwargs)

        return counted


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_new_sign_ups_costs_a_fixed_number_of_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = tenant_get_or_create("tenant_123")
    Segment.objects.create(tenant=tenant, name="email", required_consent_channel="email")
    Segment.objects.create(tenant=tenant, name="sms", required_consent_channel="sms")
    counts = {}
    offset = 0
    for size in (2, 8, 40):
        jobs = [signup(f"n-{offset + n}", offset + n) for n in range(size)]
        offset += size
        statements = _Statements(monkeypatch)
        applied_before = batch_apply.set_based_signups()
        assert batch_apply.apply_batch(jobs).statuses == {"applied": size}
        assert batch_apply.set_based_signups() - applied_before == size
        counts[size] = len(statements.sql)
        monkeypatch.undo()
    assert Profile.objects.filter(email_opt_in=True).count() == 50
    assert Profile.objects.get(email="n-2@example.com").segment_memberships.count() == 2
    # Before the transaction, the plan's four lookups (tenants, links, emails, phones) and the creation of
    # new tenants (committed first: test_a_new_tenant_in_flight_elsewhere_cannot_deadlock_a_sign_up). In it: the claim,
    # the identity locks, the same four lookups under the locks, the tenants (insert, read), the profile
    # ids, three COPYs (profiles, links, addresses), the consent statement (ledger, states, activities),
    # the segment memberships, and the close of the rows.
    assert counts == {2: 20, 8: 20, 40: 20}


def test_a_lone_sign_up_stays_per_event() -> None:
    """Below `SET_BASED_SIGNUPS_MIN` candidates the per-event path costs fewer round trips."""
    applied_before = batch_apply.set_based_signups()
    assert batch_apply.apply_batch([signup("lone", 1)]).statuses == {"applied": 1}
    assert batch_apply.set_based_signups() == applied_before
    assert Profile.objects.get(email="lone@example.com").email_opt_in is True


@pytest.mark.django_db(transaction=True)
def test_a_new_tenant_in_flight_elsewhere_cannot_deadlock_a_sign_up() -> None:
    """Another batch has inserted the same new tenant (uncommitted) and then waits, to park its messages, for
    the identity locks of a contact this batch signs up. The sign-ups' tenant is created before their
    transaction takes those locks, so the other batch gets them, commits, and no one deadlocks (inside the
    transaction, behind the locks, the sign-up's tenant insert waited for the other batch: PostgreSQL
    broke the cycle and the batch fell back)."""
    jobs = [signup("dl-1", 1, tenant_id="tenant_new"), signup("dl-2", 2, tenant_id="tenant_new")]
    tenant_in_flight = threading.Event()
    parked_wait_done = threading.Event()

    def other_batch() -> None:
        try:
            with transaction.atomic():
                tenants_create(["tenant_new"])
                tenant_in_flight.set()
                time.sleep(1.0)  # this batch is meanwhile blocked on the tenant row
                contact_identities_wait(["dl-1"])
            parked_wait_done.set()
        finally:
            connection.close()

    other = threading.Thread(target=other_batch)
    other.start()
    assert tenant_in_flight.wait(10)
    fallbacks = batch_apply.fallback_batches()
    result = batch_apply.apply_batch(jobs)
    other.join(30)

    assert parked_wait_done.is_set()
    assert result.statuses == {"applied": 2}
    assert batch_apply.fallback_batches() == fallbacks
    assert Profile.objects.filter(tenant__external_id="tenant_new").count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_batches_signing_up_each_others_message_contacts_cannot_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch signs up two new contacts and has a message for a contact the other batch signs up. Both are
    held just before writing their sign-ups, after their identity locks. The sign-ups' locks and the waits of
    the messages about to park are one statement: the second batch waits there for the first, which goes on
    when the hold times out, and neither falls back. (With the waits in a second statement, each batch held
    its sign-ups' locks and waited for the other's: PostgreSQL aborted one, a `batch_fallback`.)"""
    tenant_get_or_create("tenant_123")
    first = [signup("dx-a1", 1), signup("dx-a2", 2), message_sent_job(contact_id="dx-b1", message_id="m-b1")]
    second = [signup("dx-b1", 3), signup("dx-b2", 4), message_sent_job(contact_id="dx-a1", message_id="m-a1")]
    both_locked = threading.Barrier(2, timeout=2.0)
    write = batch_apply.new_contacts_write

    def held_write(*args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):  # the other batch waits for this one's locks
            both_locked.wait()
        return write(*args, **kwargs)

    monkeypatch.setattr(batch_apply, "new_contacts_write", held_write)
    results: dict[str, inbox.BatchResult] = {}

    def apply_second() -> None:
        try:
            results["second"] = batch_apply.apply_batch(second)
        finally:
            connection.close()

    fallbacks = batch_apply.fallback_batches()
    other = threading.Thread(target=apply_second)
    other.start()
    results["first"] = batch_apply.apply_batch(first)
    other.join(30)

    assert batch_apply.fallback_batches() == fallbacks
    assert sorted(results) == ["first", "second"]
    # The batch that locked second saw the other's sign-up committed; the other parked its message.
    assert sorted(r.statuses.get("parked", 0) for r in results.values()) == [0, 1]
    assert all(r.statuses["applied"] == 3 - r.statuses.get("parked", 0) for r in results.values())
    assert Profile.objects.filter(contact_links__messaging_contact_id__startswith="dx-").count() == 4
    unpark_contacts(["dx-a1", "dx-b1"])
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {"applied"}
    assert InboundEvent.objects.count() == 6
