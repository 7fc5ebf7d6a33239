"""The one way a batch of bridged jobs enters Celery, for the bridge and for the in-flight reconciliation.

The batch is recorded in the in-flight register first, so that a message the broker loses is found and
published again (`services.inflight.reconcile`). The task is named, not imported (`send_task`): the
bridge loads the contract, the register and Celery, never the workers' tasks, handlers or services.
"""

from collections import Counter

from celery import current_app

from messaging_events import inflight_register
from messaging_events.contract.jobs import BridgedJob

APPLY_BATCH_TASK = "messaging_events.apply_event_batch"


def publish_batch(jobs: list[BridgedJob], *, queue: str, task_id: str, republished: int = 0) -> int:
    """Publish the batch under `task_id` (the same id on every attempt). Returns the messages that
    were already waiting in the queue: the bridge batches more while the workers are behind."""
    waiting = inflight_register.track(task_id, queue, jobs, republished=republished)
    # No kombu-level retry: the bridge's batcher owns retry and backoff, and keeps the jobs meanwhile.
    current_app.send_task(
        APPLY_BATCH_TASK,
        args=(jobs,),
        queue=queue,
        routing_key=queue,
        task_id=task_id,
        retry=False,
        argsrepr=batch_summary(jobs),
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
