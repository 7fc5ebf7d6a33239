"""Thin Celery tasks: they hand events to the inbox service and own only retry and failure policy."""

import logging
from dataclasses import asdict

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import transaction

from messaging_events import inflight_register, publishing
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


@shared_task(bind=True, name=publishing.APPLY_BATCH_TASK, max_retries=None)
def apply_event_batch(self, jobs: list[BridgedJob], replay: bool = False) -> dict[str, int]:
    """Apply a batch of bridged BullMQ jobs: message events set-based in one transaction, the rest per event.
    Only a return means every event reached a recorded state; then the batch leaves the in-flight register."""
    statuses = _apply_or_retry(self, jobs, replay)
    inflight_register.forget(self.request.id)
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


@shared_task(name="messaging_events.reconcile_inflight_batches")
def reconcile_inflight_batches() -> dict[str, int]:
    """Publish again the batches the broker lost (see `services.inflight`)."""
    report = inflight.reconcile(publishing.publish_batch)
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
