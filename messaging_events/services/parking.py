"""Parked events wait for their contact. They are re-applied when it becomes known, and expire to failed.

Re-applying is a replay (no delivery counted, as `inbox.process_job(job, replay=True)`), oldest first, in
chunks of `UNPARK_CHUNK` rows: in each chunk the other types one by one, in order, then the message events
of `batch_apply.SET_BASED_TYPES` (most parked events: messages that overtook their sign-up) together, in one
set-based transaction (`batch_apply.replay_set_based`). It takes its locks in the live batches' order
(inbox rows by identity, score-refresh rows, profiles, message locks, interactions), so it cannot deadlock
with them in a cycle; if it raises anyway, it is rolled back and the chunk's messages replayed one by one.
"""

import logging
from collections.abc import Iterable, Iterator
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from crm.models import ContactLink
from messaging_events.contract.jobs import BridgedJob, Event, parse_job
from messaging_events.contract.schemas import Payload
from messaging_events.models import InboundEvent, InboundEventStatus
from messaging_events.services import batch_apply, inbox
from messaging_events.tasks import unpark_contact_events as unpark_contact_events_task

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500
# Rows per set-based transaction: its locks (the chunk's inbox rows and profiles) are held until it commits,
# so a chunk stays near a full live batch behind a backlog rather than the whole sweep.
UNPARK_CHUNK = 128


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
    """Re-apply these contacts' parked events; returns how many were tried."""
    rows = InboundEvent.objects.filter(status=InboundEventStatus.PARKED, messaging_contact_id__in=contact_ids).order_by(
        "occurred_at", "id"
    )
    count = 0
    for chunk in _chunks(rows.iterator(chunk_size=SWEEP_BATCH), UNPARK_CHUNK):
        _unpark_chunk(chunk)
        count += len(chunk)
    return count


def _chunks(rows: Iterable[InboundEvent], size: int) -> Iterator[list[InboundEvent]]:
    chunk: list[InboundEvent] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _unpark_chunk(rows: list[InboundEvent]) -> None:
    """The chunk's other types one by one, in order, then its message events set-based."""
    messages: list[tuple[InboundEvent, BridgedJob, Event[Payload]]] = []
    for row in rows:
        job = inbox.job_from_row(row)
        parsed = parse_job(job)
        if isinstance(parsed, Event) and parsed.type in batch_apply.SET_BASED_TYPES:
            messages.append((row, job, parsed))
        else:
            _replay_one(row, job)
    if not messages:
        return
    statuses = batch_apply.replay_set_based([(job, event) for _, job, event in messages])
    if statuses is None:  # rolled back, counted and logged as a fallback: one by one, as any other type
        for row, job, _ in messages:
            _replay_one(row, job)
        return
    for (row, _, _), status in zip(messages, statuses, strict=True):
        _log_unparked(row, status)


def _replay_one(row: InboundEvent, job: BridgedJob) -> None:
    status, _ = inbox.process_job(job, replay=True)
    _log_unparked(row, status)


def _log_unparked(row: InboundEvent, status: str) -> None:
    logger.info("event_unparked id=%s contact=%s status=%s", row.pk, row.messaging_contact_id, status)


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
