"""Publishes batches to Celery from one dedicated thread, so kombu never blocks the event loop."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from messaging_events.contract.jobs import BridgedJob


class CeleryPublisher:
    """Sends one `apply_event_batch` message per batch. A returned call means Redis has the message."""

    def __init__(self) -> None:
        # One thread owns the kombu producer pool: connections are not shared across threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-publish")

    def _publish_sync(self, queue: str, jobs: list[BridgedJob]) -> None:
        from messaging_events.tasks import apply_event_batch

        # No kombu-level retry: the batcher owns retry and backoff, and keeps the jobs meanwhile.
        apply_event_batch.apply_async(args=[jobs], queue=queue, routing_key=queue, retry=False)

    async def publish(self, queue: str, jobs: list[BridgedJob]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._publish_sync, queue, jobs)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
