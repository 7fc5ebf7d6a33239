"""Parked events wait for their contact. They are re-applied when it becomes known, and expire to failed."""

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from crm.models import ContactLink
from messaging_events.models import InboundEvent, InboundEventStatus
from messaging_events.services import inbox
from messaging_events.tasks import unpark_contact_events as unpark_contact_events_task

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500


def schedule_unpark(contact_ids: list[str]) -> None:
    """Ask for these contacts' parked events to be re-applied. Never raises: it runs after the batch's
    commits, where an error would fail the task and lose the retry of its transiently failed events;
    the periodic sweep re-applies what a failed schedule leaves parked."""
    try:
        parked = InboundEvent.objects.filter(status=InboundEventStatus.PARKED, messaging_contact_id__in=contact_ids)
        if parked.exists():
            unpark_contact_events_task.apply_async(args=(contact_ids,), queue="high")
    except Exception as exc:
        logger.warning("unpark_schedule_failed contacts=%d error=%s", len(contact_ids), type(exc).__name__)


def unpark_contacts(contact_ids: list[str]) -> int:
    rows = InboundEvent.objects.filter(status=InboundEventStatus.PARKED, messaging_contact_id__in=contact_ids).order_by(
        "occurred_at", "id"
    )
    count = 0
    for row in rows.iterator(chunk_size=SWEEP_BATCH):
        status, _ = inbox.process_job(inbox.job_from_row(row), replay=True)
        count += 1
        logger.info("event_unparked id=%s contact=%s status=%s", row.pk, row.messaging_contact_id, status)
    return count


def sweep() -> dict[str, int]:
    parked = InboundEvent.objects.filter(status=InboundEventStatus.PARKED)
    known = ContactLink.objects.filter(messaging_contact_id__in=parked.values("messaging_contact_id")).values_list(
        "messaging_contact_id", flat=True
    )
    retried = unpark_contacts(list(known[:SWEEP_BATCH]))
    cutoff = timezone.now() - timedelta(seconds=settings.PARKED_EVENT_MAX_AGE_S)
    expired = parked.filter(received_at__lt=cutoff).update(
        status=InboundEventStatus.FAILED,
        error=f"parked for more than {settings.PARKED_EVENT_MAX_AGE_S}s: its contact never became known",
        updated_at=timezone.now(),
    )
    if expired:
        logger.warning("parked_expired count=%d", expired)
    return {"retried": retried, "expired": expired}
