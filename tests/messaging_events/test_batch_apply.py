"""The set-based path (`batch_apply.apply_batch`, what the task runs): the same rows as the per-event
path, a fixed number of statements per batch, and every inbox guarantee — redelivery, in-batch
duplicates, parked, rejected, and a poisoned event that falls back to the per-event path alone."""

from typing import Any

import pytest
from django.db import OperationalError, connection, transaction
from django.test import override_settings

from crm.models import (
    Activity,
    AttributionEvent,
    CampaignInteraction,
    PendingScoreRefresh,
    Profile,
)
from crm.services import engagement
from messaging_events.models import InboundEvent
from messaging_events.services import batch_apply, inbox, parking
from messaging_events.services.parking import unpark_contacts
from messaging_events.tasks import apply_event_batch
from tests.factories import (
    at,
    contact_created_job,
    email_clicked_job,
    email_opened_job,
    message_bounced_job,
    message_delivered_job,
    message_sent_job,
    process,
)

pytestmark = pytest.mark.django_db

CONTACTS = ("c-a", "c-b", "c-c")


def contacts() -> None:
    for n, contact_id in enumerate(CONTACTS):
        process(
            contact_created_job(
                contact_id=contact_id, email=f"{contact_id}@example.com", phone=f"+2782111000{n}", timestamp=at(-60 + n)
            )
        )


def campaign(contact_id: str, n: int = 0, minute: int = 0) -> list[dict[str, Any]]:
    """A message's life: sent, delivered, opened twice (once naming no campaign), clicked with UTM."""
    message = f"m-{contact_id}-{n}"
    return [
        message_sent_job(contact_id=contact_id, message_id=message, sent_at=at(minute), event_id=f"s-{message}"),
        message_delivered_job(
            contact_id=contact_id, message_id=message, delivered_at=at(minute + 1), event_id=f"d-{message}"
        ),
        email_opened_job(contact_id=contact_id, message_id=message, opened_at=at(minute + 7), event_id=f"o1-{message}"),
        email_opened_job(
            contact_id=contact_id,
            message_id=message,
            opened_at=at(minute + 3),
            campaign_id=None,
            event_id=f"o2-{message}",
        ),
        email_clicked_job(
            contact_id=contact_id,
            message_id=message,
            clicked_at=at(minute + 9),
            link_url="https://example.com/x?utm_source=news&utm_campaign=dec",
            event_id=f"c-{message}",
        ),
    ]


def state() -> dict[str, Any]:
    """Every row the message events write, without ids and arrival times."""
    by_event = dict(InboundEvent.objects.values_list("pk", "idempotency_key"))
    return {
        "inbox": sorted(
            InboundEvent.objects.values_list(
                "idempotency_key", "event_type", "status", "error", "deliveries", "attempts", "tenant__external_id"
            )
        ),
        "applied_at_set": sorted((row.idempotency_key, row.applied_at is None) for row in InboundEvent.objects.all()),
        "activities": sorted(
            (a.profile.email, a.type, a.occurred_at, sorted(a.data.items()), by_event.get(a.source_event_id))
            for a in Activity.objects.select_related("profile")
        ),
        "interactions": sorted(
            CampaignInteraction.objects.values_list(
                "profile__email",
                "message_id",
                "type",
                "campaign_id",
                "template_id",
                "channel",
                "count",
                "first_at",
                "last_at",
            )
        ),
        "attributions": sorted(
            (a.profile.email, a.campaign_id, a.message_id, a.link_url, a.utm_source, a.utm_campaign, a.occurred_at)
            for a in AttributionEvent.objects.select_related("profile")
        ),
        "profiles": sorted(
            Profile.objects.values_list("email", "last_message_at", "last_activity_at", "last_email_open_at")
        ),
        "pending_refresh": sorted(PendingScoreRefresh.objects.values_list("profile__email", flat=True)),
    }


class _Rollback(Exception):
    pass


def state_after(apply) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        with transaction.atomic():
            contacts()
            apply()
            result = state()
            raise _Rollback
    except _Rollback:
        pass
    return result


def test_the_set_based_path_writes_exactly_what_the_per_event_path_writes() -> None:
    jobs = [job for contact_id in CONTACTS for job in campaign(contact_id)]
    jobs += campaign("c-a", n=1, minute=30)
    jobs += [message_sent_job(contact_id="c-unknown", message_id="m-u", event_id="s-u")]  # parked
    jobs += [message_delivered_job(contact_id="c-b", message_id="m-c-b-0", tenant_id="other", event_id="x")]  # rejected
    jobs += [jobs[0], jobs[3]]  # in-batch duplicates

    per_event = state_after(lambda: inbox.process_batch(jobs))
    set_based = state_after(lambda: batch_apply.apply_batch(jobs))
    assert set_based == per_event
    assert len(per_event["activities"]) == 20 and per_event["attributions"]  # the comparison compares something


def test_a_batch_costs_a_fixed_number_of_statements(django_assert_max_num_queries) -> None:
    contacts()
    small = campaign("c-a")
    large = [job for contact_id in CONTACTS for n in range(3) for job in campaign(contact_id, n=n + 1)]
    # claim, links, score-refresh rows, profile locks, activities, message locks, interactions,
    # fill from SENT, attributions, profile timestamps, close; a savepoint around them
    with django_assert_max_num_queries(13):
        assert batch_apply.apply_batch(small).statuses == {"applied": 5}
    with django_assert_max_num_queries(13):
        assert batch_apply.apply_batch(large).statuses == {"applied": 45}


def test_a_redelivered_batch_changes_nothing_but_the_delivery_counts() -> None:
    contacts()
    jobs = campaign("c-a") + campaign("c-b")
    assert apply_event_batch.apply(args=[jobs]).get() == {"applied": 10}
    messages = InboundEvent.objects.exclude(event_type="contact.created")
    before = state()
    applied_at = dict(InboundEvent.objects.values_list("idempotency_key", "applied_at"))

    assert apply_event_batch.apply(args=[jobs]).get() == {"applied": 10}
    after = state()
    assert after["inbox"] == [
        (*row[:4], 2 if row[1] != "contact.created" else 1, *row[5:]) for row in before["inbox"]
    ]  # deliveries 1 → 2
    assert dict(InboundEvent.objects.values_list("idempotency_key", "applied_at")) == applied_at
    assert {k: v for k, v in after.items() if k != "inbox"} == {k: v for k, v in before.items() if k != "inbox"}
    assert set(messages.values_list("attempts", flat=True)) == {1}


def test_in_batch_duplicates_are_folded_into_one_row_and_one_effect() -> None:
    contacts()
    sent, _, opened, *_ = campaign("c-a")
    republished = {**opened, "id": "9999", "attemptsMade": 3}  # the same event as a new BullMQ job
    assert batch_apply.apply_batch([sent, opened, sent, republished, opened]).statuses == {"applied": 5}
    rows = {row.event_type: row for row in InboundEvent.objects.all()}
    assert (rows["message.sent"].deliveries, rows["message.sent"].attempts) == (2, 1)
    assert (rows["email.opened"].deliveries, rows["email.opened"].job_attempts) == (3, 3)
    assert Activity.objects.filter(type="EMAIL_OPENED").count() == 1
    assert CampaignInteraction.objects.get(type="OPENED").count == 1
    assert CampaignInteraction.objects.get(type="SENT").count == 1


def test_unknown_contacts_are_parked_redelivered_parked_then_applied() -> None:
    jobs = campaign("c-late")[:2]
    assert batch_apply.apply_batch(jobs).statuses == {"parked": 2}
    assert batch_apply.apply_batch(jobs).statuses == {"parked": 2}
    for row in InboundEvent.objects.all():
        assert (row.status, row.deliveries, row.attempts, row.tenant_id) == ("parked", 2, 2, None)
        assert row.error == "contact c-late is not known yet"
    assert not Activity.objects.exists()

    process(contact_created_job(contact_id="c-late", email="late@example.com", timestamp=at(-5)))
    assert unpark_contacts(["c-late"]) == 2
    assert set(InboundEvent.objects.filter(event_type__startswith="message").values_list("status", flat=True)) == {
        "applied"
    }
    assert CampaignInteraction.objects.get(type="DELIVERED").campaign_id == "campaign_dec_2025"


def test_a_stated_tenant_for_an_unknown_contact_is_created_and_recorded_on_the_parked_row() -> None:
    assert batch_apply.apply_batch([message_sent_job(contact_id="nobody", tenant_id="t-new")]).statuses == {"parked": 1}
    assert InboundEvent.objects.get().tenant.external_id == "t-new"


def test_a_tenant_mismatch_is_rejected_and_its_batch_mates_applied() -> None:
    contacts()
    good = campaign("c-a")
    bad = message_sent_job(contact_id="c-b", message_id="m-bad", tenant_id="someone_else", event_id="bad")
    assert batch_apply.apply_batch([*good, bad]).statuses == {"applied": 5, "rejected": 1}
    row = InboundEvent.objects.get(idempotency_key="bad")
    assert row.status == "rejected"
    assert row.error == "contact c-b belongs to another tenant than 'someone_else'"
    assert row.tenant_id is None  # the stated tenant does not exist
    assert not CampaignInteraction.objects.filter(message_id="m-bad").exists()
    assert Profile.objects.get(email="c-b@example.com").last_message_at is None


def _refuse_interactions_for(message_id: str) -> None:
    """A database rule that refuses one event's row (in this test's transaction only): the statement that
    writes it fails, whichever path writes it."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION pg_temp.refuse_interaction() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'interaction refused'; END $$;
            CREATE TRIGGER refuse_interaction BEFORE INSERT ON crm_campaigninteraction
            FOR EACH ROW WHEN (NEW.message_id = %s) EXECUTE FUNCTION pg_temp.refuse_interaction();
            """,
            [message_id],
        )


def test_a_poisoned_event_falls_back_to_the_per_event_path_and_only_it_fails(caplog: pytest.LogCaptureFixture) -> None:
    contacts()
    good = campaign("c-a") + campaign("c-b")
    poisoned = message_sent_job(contact_id="c-c", message_id="m-poison", event_id="p")
    _refuse_interactions_for("m-poison")
    fallbacks = batch_apply.fallback_batches()
    assert batch_apply.apply_batch([*good[:5], poisoned, *good[5:]]).statuses == {"applied": 10, "failed": 1}
    assert batch_apply.fallback_batches() == fallbacks + 1
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch_fallback")]
    assert line == f"batch_fallback events=11 fallbacks={fallbacks + 1} error=ProgrammingError sqlstate=P0001"
    failed = InboundEvent.objects.get(status="failed")
    assert failed.idempotency_key == "p"
    assert failed.error.startswith("database error:")
    assert InboundEvent.objects.filter(status="applied").exclude(event_type="contact.created").count() == 10
    assert set(InboundEvent.objects.values_list("deliveries", flat=True)) == {1}  # the rolled-back claim left no trace
    assert Activity.objects.filter(type="MESSAGE_SENT").count() == 2
    assert not CampaignInteraction.objects.filter(message_id="m-poison").exists()


def test_contact_events_of_the_batch_run_first_so_their_messages_apply() -> None:
    jobs = [
        message_sent_job(contact_id="c-new", message_id="m1", event_id="s1"),
        contact_created_job(contact_id="c-new", email="new@example.com", timestamp=at(-1)),
        message_bounced_job(contact_id="c-new", message_id="m1", bounce_type="soft", event_id="b1"),
        {"id": "7", "name": "no.such.event", "timestamp": 0, "attemptsMade": 0, "data": {}},
    ]
    result = batch_apply.apply_batch(jobs)
    assert result.statuses == {"applied": 3, "rejected": 1}
    assert result.linked_contact_ids == {"c-new"}
    assert Profile.objects.get().last_message_at == at(0)


def test_a_copy_with_the_same_identity_but_other_data_takes_the_per_event_path() -> None:
    contacts()
    first = message_delivered_job(contact_id="c-a", message_id="m", delivered_at=at(1), event_id="same")
    other = message_delivered_job(contact_id="c-a", message_id="m", delivered_at=at(2), event_id="same")
    assert batch_apply.apply_batch([first, other]).statuses == {"applied": 2}
    row = InboundEvent.objects.get(idempotency_key="same")
    assert row.deliveries == 2
    assert row.raw_data == first["data"]
    assert CampaignInteraction.objects.get().last_at == at(1)


def test_replays_take_the_per_event_path() -> None:
    row_job = message_sent_job(contact_id="c-a", event_id="r")
    batch_apply.apply_batch([row_job])
    contacts()
    row = InboundEvent.objects.get(idempotency_key="r")
    assert batch_apply.apply_batch([inbox.job_from_row(row)], replay=True).statuses == {"applied": 1}
    row.refresh_from_db()
    assert (row.status, row.deliveries, row.attempts) == ("applied", 1, 2)


def test_engagement_refresh_is_scheduled_once_per_batch_after_commit(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    contacts()
    calls: list[None] = []
    monkeypatch.setattr(engagement, "engagement_refresh_schedule", lambda: calls.append(None))
    jobs = [job for contact_id in CONTACTS for job in campaign(contact_id)]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        batch_apply.apply_batch(jobs)
    assert calls == []  # nothing before commit
    for callback in callbacks:
        callback()
    assert len(calls) == 1
    assert PendingScoreRefresh.objects.count() == 3


class _DownInbox:
    """Stands for `InboundEvent` in `parking` while the database is down."""

    class objects:
        @staticmethod
        def filter(**kwargs):
            raise OperationalError("server closed the connection unexpectedly")


@override_settings(EVENT_TASK_MAX_RETRIES=3)
@pytest.mark.django_db(transaction=True)
def test_a_database_outage_after_a_contact_links_still_retries_the_batchs_message_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The contact commits, then the database goes away for the rest of the batch: the message event
    must be retried, not dropped because scheduling the contact's parked events failed as well."""
    real_process_batch = inbox.process_batch
    outage = {"on": True}

    def set_based_down(claims):
        raise OperationalError("server closed the connection unexpectedly")

    def per_event(jobs, **kwargs):
        if outage["on"] and jobs and all(job["name"] == "message.sent" for job in jobs):  # the fallback, still down
            outage["on"] = False
            monkeypatch.setattr(batch_apply, "_apply_claims", real_apply_claims)
            monkeypatch.setattr(parking, "InboundEvent", _DownInbox)
            result = inbox.BatchResult()
            result.transient.extend((job, "OperationalError: server closed the connection") for job in jobs)
            return result
        monkeypatch.setattr(parking, "InboundEvent", InboundEvent)
        return real_process_batch(jobs, **kwargs)

    real_apply_claims = batch_apply._apply_claims
    monkeypatch.setattr(batch_apply, "_apply_claims", set_based_down)
    monkeypatch.setattr(inbox, "process_batch", per_event)
    jobs = [
        contact_created_job(contact_id="c-out", email="out@example.com", timestamp=at(-1)),
        message_sent_job(contact_id="c-out", message_id="m-out", event_id="s-out"),
    ]
    assert apply_event_batch.apply(args=[jobs]).get() == {"applied": 1}  # the retry, carrying the send
    assert not outage["on"]
    assert sorted(InboundEvent.objects.values_list("event_type", "status")) == [
        ("contact.created", "applied"),
        ("message.sent", "applied"),
    ]


def test_other_content_under_an_applied_identity_in_a_later_batch_opens_a_conflict_and_changes_nothing() -> None:
    contacts()
    first = message_delivered_job(contact_id="c-a", message_id="m", delivered_at=at(1), event_id="same")
    other = message_delivered_job(contact_id="c-a", message_id="m", delivered_at=at(2), event_id="same")
    batch_apply.apply_batch([first])
    assert batch_apply.apply_batch([other, first]).statuses == {"applied": 2}  # both find the applied row
    row = InboundEvent.objects.get(idempotency_key="same")
    assert (row.status, row.deliveries, row.conflict) == ("applied", 3, "open")
    assert row.raw_data == first["data"] and row.conflict_data == other["data"]
    assert CampaignInteraction.objects.get().last_at == at(1)
    assert Activity.objects.filter(type="MESSAGE_DELIVERED").count() == 1
