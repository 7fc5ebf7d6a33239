"""Parked events: the sweep re-applies those whose contact became known and expires the ones too old,
in-process and through the real beat schedule."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from crm.models import CampaignInteraction
from messaging_events.models import InboundEvent
from messaging_events.services import parking
from tests.factories import contact_created_job, message_sent_job, process
from tests.processes import Processes, publish_jobs, wait_until


@pytest.mark.django_db
@override_settings(PARKED_EVENT_MAX_AGE_S=3600)
def test_the_sweep_applies_parked_events_whose_contact_is_known_and_expires_old_ones() -> None:
    assert process(message_sent_job(contact_id="known-later", message_id="m-known", event_id="p-known")) == "parked"
    assert process(message_sent_job(contact_id="ghost-old", message_id="m-old", event_id="p-old")) == "parked"
    assert process(message_sent_job(contact_id="ghost-new", message_id="m-new", event_id="p-new")) == "parked"
    InboundEvent.objects.filter(idempotency_key="p-old").update(received_at=timezone.now() - timedelta(seconds=3601))
    process(contact_created_job(contact_id="known-later", email="later@example.com"))  # no unpark scheduled here

    assert parking.sweep() == {"retried": 1, "expired": 1}

    statuses = dict(
        InboundEvent.objects.filter(idempotency_key__startswith="p-").values_list("idempotency_key", "status")
    )
    assert statuses == {"p-known": "applied", "p-old": "failed", "p-new": "parked"}
    expired = InboundEvent.objects.get(idempotency_key="p-old")
    assert expired.error == "parked for more than 3600s: its contact never became known"
    assert list(CampaignInteraction.objects.values_list("message_id", flat=True)) == ["m-known"]
    assert parking.sweep() == {"retried": 0, "expired": 0}  # nothing left to do: the sweep is idempotent


@pytest.mark.processes
@pytest.mark.timeout(300)
def test_beat_runs_the_sweep_that_unparks_and_expires(processes: Processes) -> None:
    """The production beat schedule, with short intervals: a parked event whose contact got linked
    without an unpark being scheduled (here, applied in this process) is applied by the sweep, and
    one whose contact never comes expires to failed."""
    processes.start_worker(env={"PARKED_EVENT_MAX_AGE_S": "20"}, wait=False)
    processes.start_bridge(wait=False)
    processes.wait_ready()
    jobs = [
        message_sent_job(contact_id="late-contact", message_id="m-late", event_id="b-late"),
        message_sent_job(contact_id="never-contact", message_id="m-never", event_id="b-never"),
    ]
    publish_jobs([{"name": job["name"], "data": job["data"]} for job in jobs])

    def status(key: str) -> str | None:
        return InboundEvent.objects.filter(idempotency_key=key).values_list("status", flat=True).first()

    wait_until(lambda: status("b-late") == status("b-never") == "parked", 60)
    process(contact_created_job(contact_id="late-contact", email="late@example.com"))
    assert status("b-late") == "parked", "only the sweep can apply it now"

    processes.start_beat(env={"PARKED_SWEEP_INTERVAL_S": "2", "PARKED_EVENT_MAX_AGE_S": "20"})
    wait_until(lambda: status("b-late") == "applied", 60, message="the beat sweep to apply the parked event")
    assert CampaignInteraction.objects.filter(message_id="m-late").count() == 1
    assert status("b-never") == "parked"
    wait_until(lambda: status("b-never") == "failed", 90, message="the beat sweep to expire the parked event")
    assert "its contact never became known" in InboundEvent.objects.get(idempotency_key="b-never").error
