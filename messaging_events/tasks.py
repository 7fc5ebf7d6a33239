"""Thin Celery tasks: they hand events to the inbox service and own only retry and failure policy."""

import logging
from collections import Counter
from dataclasses import asdict

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import transaction

from messaging_events.contract.jobs import BridgedJob
from messaging_events.services import batch_apply, inbox, inflight

logger = logging.getLogger(__name__)


def _retry_countdown(retries: int) -> int:
    # Full jitter: the batches a database outage failed together do not all come back at the same second.
    return get_exponential_backoff_interval(
        factor=2, retries=retries, maximum=settings.EVENT_TASK_RETRY_BACKOFF_MAX_S, full_jitter=True
    )


def _schedule_unpark(contact_ids: list[str]) -> None:
    """Unpark the events waiting for these contacts. Outside a transaction `on_commit` asks the
    connection for its autocommit state, which reconnects: if the database just went away, an error
    escaping here would skip the retry of the batch's transient events and acknowledge them unrecorded
    (seen as lost events in the PostgreSQL-restart test). `parking.schedule_unpark` guards its own
    query and publish; the beat sweep unparks what a failed schedule leaves parked."""
    # The parking service is imported in the task bodies: it imports this module to queue its task.
    from messaging_events.services import parking

    try:
        transaction.on_commit(lambda: parking.schedule_unpark(contact_ids))
    except inbox.TRANSIENT_ERRORS as exc:
        logger.warning("unpark_schedule_failed contacts=%d error=%s", len(contact_ids), type(exc).__name__)


@shared_task(bind=True, name="messaging_events.apply_event_batch", max_retries=None)
def apply_event_batch(self, jobs: list[BridgedJob], replay: bool = False) -> dict[str, int]:
    """Apply a batch of bridged BullMQ jobs: message events set-based in one transaction, the rest per event.
    Only a return means every event reached a recorded state; then the batch leaves the in-flight register."""
    statuses = _apply_or_retry(self, jobs, replay)
    inflight.forget(self.request.id)
    return statuses


def _apply_or_retry(task, jobs: list[BridgedJob], replay: bool) -> dict[str, int]:
    result = batch_apply.apply_batch(jobs, replay=replay)
    if result.linked_contact_ids:
        _schedule_unpark(sorted(result.linked_contact_ids))
    if result.transient:
        failed_jobs = [job for job, _ in result.transient]
        if task.request.retries < settings.EVENT_TASK_MAX_RETRIES:
            countdown = _retry_countdown(task.request.retries)
            logger.warning("batch_retry events=%d countdown=%ds", len(failed_jobs), countdown)
            raise task.retry(args=[failed_jobs], kwargs={"replay": replay}, countdown=countdown, queue=_queue_of(task))
        try:
            for job, error in result.transient:
                inbox.record_failure(job, f"gave up after {task.request.retries} retries: {error}")
        except inbox.TRANSIENT_ERRORS:
            # The database is still unreachable, so not even the failure can be recorded. Keep the
            # events in the broker and try again at the longest backoff: acknowledging now would lose them.
            logger.error("batch_unrecordable events=%d; retrying until the database answers", len(failed_jobs))
            raise task.retry(
                args=[failed_jobs],
                kwargs={"replay": replay},
                countdown=settings.EVENT_TASK_RETRY_BACKOFF_MAX_S,
                queue=_queue_of(task),
                max_retries=None,
            ) from None
        result.statuses["failed"] = result.statuses.get("failed", 0) + len(result.transient)
    return result.statuses


def _queue_of(task) -> str:
    """The queue the running batch came from, where its retry goes too."""
    return (task.request.delivery_info or {}).get("routing_key") or "normal"


def publish_batch(jobs: list[BridgedJob], *, queue: str, task_id: str, republished: int = 0) -> int:
    """The one way the bridge's batches enter Celery: recorded in the in-flight register first, so a
    message the broker loses is found and published again (`reconcile_inflight_batches`). Returns the
    messages that were already waiting in the queue."""
    waiting = inflight.track(task_id, queue, jobs, republished=republished)
    # No kombu-level retry: the bridge's batcher owns retry and backoff, and keeps the jobs meanwhile.
    # Celery passes argsrepr on to the message's headers; celery-types does not list it among the options.
    apply_event_batch.apply_async(  # type: ignore[call-arg]
        args=(jobs,), queue=queue, routing_key=queue, task_id=task_id, retry=False, argsrepr=batch_summary(jobs)
    )
    return waiting


def batch_summary(jobs: list[BridgedJob]) -> str:
    """What Flower and the worker's logs show as the task's arguments, instead of Celery's repr of every
    job: the repr would carry contacts' emails and phone numbers, and took a fifth of the bridge's
    publish time. Job ids and types say enough to find a batch's events in the inbox."""
    types = Counter(str(job.get("name") or "?") for job in jobs)
    ids = [str(job.get("id")) for job in jobs]
    span = f"{ids[0]}..{ids[-1]}" if len(ids) > 1 else "".join(ids)
    counts = ", ".join(f"{count} {name}" for name, count in types.most_common())
    return f"{len(jobs)} jobs [{span}]: {counts}"[:200]


@shared_task(name="messaging_events.reconcile_inflight_batches")
def reconcile_inflight_batches() -> dict[str, int]:
    """Publish again the batches the broker lost (see `services.inflight`)."""
    report = inflight.reconcile(publish_batch)
    return {**asdict(report), "republished": len(report.republished)}


@shared_task(name="messaging_events.unpark_contact_events")
def unpark_contact_events(contact_ids: list[str]) -> int:
    """Re-apply events that were parked waiting for these contacts."""
    from messaging_events.services import parking

    return parking.unpark_contacts(contact_ids)


@shared_task(name="messaging_events.sweep_parked_events")
def sweep_parked_events() -> dict[str, int]:
    """Safety net: apply parked events whose contact is now known, expire the ones too old."""
    from messaging_events.services import parking

    return parking.sweep()
