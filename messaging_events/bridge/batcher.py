"""Collects bridged jobs per Celery queue and publishes them in batches.

A job's processor awaits its batch's publication: BullMQ completes the job only after
its Celery message is in the broker. When the broker is down the batch is retried with
exponential backoff, for as long as it takes; the jobs stay active (their locks are
renewed by the bullmq Worker) and are never dropped.

How long a batch waits to fill: always up to `linger_s`; and up to `backlog_linger_s` while the
last publish found messages already waiting in the queue. A worker pays a fixed cost per Celery
message (one transaction and about eight statements whatever the batch size), so while it is
behind, a fuller batch costs it less and delays nothing: the jobs would only have waited in the
queue instead. That longer wait ends as soon as every BullMQ slot the bridge has is held
(`Slots`), because then no further job can arrive to fill the batch.
"""

import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from messaging_events import error_tracking
from messaging_events.bridge import metrics
from messaging_events.contract.jobs import BridgedJob

logger = logging.getLogger(__name__)

# (queue, jobs, batch id) -> the messages already waiting in that queue when the batch went in (None:
# not known). The id is the batch's Celery task id, the same on every attempt to publish it.
Publish = Callable[[str, list[BridgedJob], str], Awaitable[int | None]]


class Slots:
    """The bridge's BullMQ concurrency, shared by its batchers. A job holds a slot from its submit
    until its batch is in the broker; when every slot is held no job can arrive to fill a batch."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.held = 0
        self._batchers: list[Batcher] = []

    @property
    def full(self) -> bool:
        return self.held >= self.capacity

    def join(self, batcher: "Batcher") -> None:
        self._batchers.append(batcher)

    def take(self) -> None:
        self.held += 1
        if self.full:
            for batcher in self._batchers:
                batcher.end_backlog_linger()

    def give_back(self) -> None:
        self.held -= 1


@dataclass
class _Pending:
    job: BridgedJob
    done: asyncio.Future
    arrived_at: float


class Batcher:
    def __init__(
        self,
        queue: str,
        publish: Publish,
        *,
        max_size: int,
        linger_s: float,
        backlog_linger_s: float | None = None,
        slots: Slots | None = None,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 10.0,
    ) -> None:
        self.queue = queue
        self._publish = publish
        self.max_size = max(1, max_size)
        self.linger_s = linger_s
        self.backlog_linger_s = linger_s if backlog_linger_s is None else max(linger_s, backlog_linger_s)
        self._slots = slots if slots is not None else Slots(sys.maxsize)  # alone: only max_size and linger
        self._slots.join(self)
        self.queue_backlog = 0  # messages waiting in the Celery queue at the last publish
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._flush_now = False
        self._slots_were_full = False
        self._task: asyncio.Task | None = None
        self.published_jobs = 0
        self.published_batches = 0
        self.publish_failures = 0
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self.queue}")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def end_backlog_linger(self) -> None:
        """Every slot is held: what is pending waits no longer than `linger_s`."""
        if self._pending:
            self._slots_were_full = True
            self._wakeup.set()

    async def submit(self, job: BridgedJob) -> None:
        """Returns once the job's batch is in the broker."""
        loop = asyncio.get_running_loop()
        entry = _Pending(job, loop.create_future(), loop.time())
        self._pending.append(entry)
        self._slots.take()
        if len(self._pending) == 1 or len(self._pending) >= self.max_size:
            self._wakeup.set()
        try:
            await entry.done
        finally:
            self._slots.give_back()

    def _publish_at(self) -> float:
        """When the pending batch goes, unless it fills first (module doc)."""
        if len(self._pending) >= self.max_size or self._flush_now:
            return 0.0
        backlog = self.queue_backlog > 0 and not self._slots_were_full
        return self._pending[0].arrived_at + (self.backlog_linger_s if backlog else self.linger_s)

    def flush_now(self) -> None:
        """From now on, publish without lingering: used at shutdown."""
        self._flush_now = True
        self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._publish_at() > loop.time():
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._publish_at() - loop.time())
                if self._publish_at() > loop.time():
                    continue
            batch = self._pending[: self.max_size]
            del self._pending[: self.max_size]
            self._slots_were_full = False
            await self._publish_until_done(batch)

    async def _publish_until_done(self, batch: list[_Pending]) -> None:
        delay = self.retry_initial_s
        jobs = [entry.job for entry in batch]
        batch_id = str(uuid.uuid4())
        while True:
            started = time.perf_counter()
            try:
                backlog = await self._publish(self.queue, jobs, batch_id)
                break
            except Exception as exc:
                self.publish_failures += 1
                metrics.BRIDGE_PUBLISH_RETRIES.labels(self.queue).inc()
                if not self._failing:  # once per outage, not once per retry
                    error_tracking.report(exc, queue=self.queue, jobs=len(jobs))
                self._failing = True
                logger.warning(
                    "broker_publish_failed",
                    extra={
                        "queue": self.queue,
                        "jobs": len(jobs),
                        "retry_in_s": round(delay, 3),
                        "error": f"{type(exc).__name__}: {exc}"[:300],
                    },
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
        metrics.BRIDGE_PUBLISH_SECONDS.labels(self.queue).observe(time.perf_counter() - started)
        metrics.BRIDGE_BATCH_SIZE.labels(self.queue).observe(len(jobs))
        self._failing = False
        if self.publish_failures and delay > self.retry_initial_s:
            logger.info("broker_publish_recovered", extra={"queue": self.queue, "jobs": len(jobs)})
        self.queue_backlog = backlog or 0
        self.published_jobs += len(jobs)
        self.published_batches += 1
        for entry in batch:
            if not entry.done.done():
                entry.done.set_result(None)
