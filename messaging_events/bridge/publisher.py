"""Publishes batches to Celery from one dedicated thread, so kombu never blocks the event loop."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from messaging_events.contract.jobs import BridgedJob
from messaging_events.publishing import publish_batch


class CeleryPublisher:
    """Sends one `apply_event_batch` message per batch. A returned call means Redis has the message."""

    def __init__(self) -> None:
        # One thread owns the kombu producer pool: connections are not shared across threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-publish")

    def _publish_sync(self, queue: str, jobs: list[BridgedJob], batch_id: str) -> int:
        return publish_batch(jobs, queue=queue, task_id=batch_id)

    async def publish(self, queue: str, jobs: list[BridgedJob], batch_id: str) -> int:
        """Returns the messages that were already waiting in `queue`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._publish_sync, queue, jobs, batch_id)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
