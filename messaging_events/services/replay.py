"""Replays: inbox events go back through the normal task path, on their priority's queue."""

from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings

from messaging_events.models import InboundEvent
from messaging_events.services.inbox import job_from_row
from messaging_events.tasks import apply_event_batch as apply_event_batch_task


def replay_events(rows: Iterable[InboundEvent], *, batch_size: int | None = None) -> int:
    """Publish the rows' jobs to Celery with `replay=True`. Applied and ignored events change nothing."""
    size = batch_size or settings.BRIDGE_BATCH_SIZE
    pending: dict[str, list] = defaultdict(list)
    count = 0

    def flush(queue: str) -> None:
        if pending[queue]:
            apply_event_batch_task.apply_async(args=(pending[queue],), kwargs={"replay": True}, queue=queue)
            pending[queue] = []

    for row in rows:
        pending[row.priority].append(job_from_row(row))
        count += 1
        if len(pending[row.priority]) >= size:
            flush(row.priority)
    for queue in list(pending):
        flush(queue)
    return count
