"""The bridge process: a bullmq Worker whose processor hands each job to a per-queue batcher.

One job's life: the Worker moves it to active and calls `process`; the job is judged by the
contract (valid → its priority's queue; invalid → a rejection record on `normal`); the
batcher publishes its Celery message; only then does `process` return and the Worker
complete the job. A crash at any point leaves the job active in BullMQ, and the stalled-job
check hands it to the next bridge.
"""

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass

from bullmq import Job, Queue, Worker
from django.conf import settings
from redis import RedisError

from messaging_events import error_tracking, metrics
from messaging_events.bridge import metrics as bridge_metrics
from messaging_events.bridge.batcher import Batcher, Publish, Slots
from messaging_events.bridge.pipelined import PipelinedScripts
from messaging_events.bridge.publisher import CeleryPublisher
from messaging_events.bridge.watch import ConnectionWatch
from messaging_events.connections import describe_error
from messaging_events.contract.jobs import (
    OVERSIZED_MARKER,
    UNDECODABLE_MARKER,
    BridgedJob,
    Rejection,
    check_depth,
    identity_of,
    parse_job,
    unreadable_job,
)
from messaging_events.contract.routing import QUEUE_ORDER, Priority, event_type_from_name

logger = logging.getLogger(__name__)

OVERSIZED_PREVIEW_CHARS = 2000
STATS_QUERY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class BridgeConfig:
    redis_url: str
    broker_url: str
    queue_name: str
    prefix: str
    batch_size: int
    linger_s: float
    backlog_linger_s: float
    concurrency: int
    max_job_bytes: int
    lock_duration_ms: int
    stalled_interval_ms: int
    retry_max_s: float
    shutdown_timeout_s: float
    stats_interval_s: float
    keep_completed: int
    connection_check_s: float
    metrics_port: int = 0

    @classmethod
    def from_settings(cls) -> "BridgeConfig":
        return cls(
            redis_url=settings.BULLMQ_REDIS_URL,
            broker_url=settings.CELERY_BROKER_URL,
            queue_name=settings.BULLMQ_QUEUE,
            prefix=settings.BULLMQ_PREFIX,
            batch_size=settings.BRIDGE_BATCH_SIZE,
            linger_s=settings.BRIDGE_LINGER_MS / 1000,
            backlog_linger_s=settings.BRIDGE_BACKLOG_LINGER_MS / 1000,
            concurrency=settings.BRIDGE_CONCURRENCY,
            max_job_bytes=settings.BRIDGE_MAX_JOB_BYTES,
            lock_duration_ms=settings.BULLMQ_LOCK_DURATION_MS,
            stalled_interval_ms=settings.BULLMQ_STALLED_INTERVAL_MS,
            retry_max_s=settings.BRIDGE_PUBLISH_RETRY_MAX_S,
            shutdown_timeout_s=settings.BRIDGE_SHUTDOWN_TIMEOUT_S,
            stats_interval_s=settings.BRIDGE_STATS_INTERVAL_S,
            keep_completed=settings.BULLMQ_KEEP_COMPLETED,
            connection_check_s=settings.BRIDGE_CONNECTION_CHECK_S,
            metrics_port=settings.BRIDGE_METRICS_PORT,
        )


def _decodes(raw: object) -> bool:
    try:
        json.loads(raw if isinstance(raw, str | bytes) else "{}")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's JSON parser goes
        return False
    return True


def _integer_text(raw: object) -> bool:
    try:
        int(raw if isinstance(raw, str | bytes) else "0")
    except ValueError:
        return False
    return True


class BridgeWorker(Worker):
    """The bullmq Worker with two guarantees the stock one lacks, sending its fetches and completions
    in pipelines (`pipelined.py`).

    Undecodable data: bullmq parses `data` with `json.loads` before any processor runs, so a
    job whose data is not JSON (only a raw Redis write can make one) would fail inside the fetch,
    stall, and come back forever. Here such data is wrapped as `{UNDECODABLE_MARKER: {head}}`, so
    the job reaches the processor, becomes a rejection record and is completed.

    Draining: `Worker.run` leaves its loop as soon as it is closing and a round brings no job, but
    fetches (`moveToActive`) already in flight still move jobs to active. Those jobs were never
    handed to a processor: they stayed active until their lock expired and a stalled check gave
    them to another bridge. `close()` awaits the in-flight fetches before closing the connections,
    so processing such a job inside its fetch publishes and completes it like any other.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # Fetches start together and a Celery batch's jobs finish together: one pipeline each, not a call per job.
        pipelined = PipelinedScripts(self.backend.scripts)
        self.backend.moveToActive = pipelined.move_to_active
        self.backend.moveToCompleted = pipelined.move_to_completed

    async def nextJobFromJobData(self, job_data=None, job_id=None, limit_until=0, delay_until=0, token=None):
        if job_data and not _decodes(job_data.get("data", "{}")):
            head = str(job_data.get("data"))[:OVERSIZED_PREVIEW_CHARS]
            job_data = {**job_data, "data": json.dumps({UNDECODABLE_MARKER: {"head": head}})}
        if job_data and not _integer_text(job_data.get("timestamp", "0")):
            # bullmq reads the timestamp with int(); a producer's `opts.timestamp` of 1.5 would fail the fetch.
            job_data = {**job_data, "timestamp": "0"}
        return await super().nextJobFromJobData(job_data, job_id, limit_until, delay_until, token)

    async def getNextJob(self, token: str):
        job = await super().getNextJob(token)
        if job is not None and self.closing:
            await self.processJob(job, token)
            return None
        return job


def bridged_job(job: Job, max_bytes: int) -> BridgedJob:
    """The JSON that travels in the Celery message for one BullMQ job."""
    bridged: BridgedJob = {
        "id": str(job.id),
        "name": job.name or "",
        "timestamp": job.timestamp,
        "attemptsMade": job.attemptsMade,
        "data": job.data,
    }
    if isinstance(job.data, dict) and UNDECODABLE_MARKER in job.data:
        bridged["key"] = identity_of(bridged["name"], job.data, job.timestamp)
        bridged["rejection"] = "job data is not valid JSON"
        return bridged
    check_depth(job.data)
    encoded = json.dumps(job.data, separators=(",", ":"), ensure_ascii=False, default=str)
    size = len(encoded.encode())
    if size > max_bytes:
        event_type = event_type_from_name(bridged["name"])
        bridged["key"] = identity_of(event_type.value if event_type else bridged["name"], job.data, job.timestamp)
        bridged["rejection"] = f"job data is {size} bytes; the limit is {max_bytes} (BRIDGE_MAX_JOB_BYTES)"
        bridged["data"] = {OVERSIZED_MARKER: {"bytes": size, "head": encoded[:OVERSIZED_PREVIEW_CHARS]}}
    return bridged


class Bridge:
    def __init__(self, config: BridgeConfig, publish: Publish | None = None) -> None:
        self.config = config
        self._publisher: CeleryPublisher | None = None
        if publish is None:
            self._publisher = CeleryPublisher()
            publish = self._publisher.publish
        slots = Slots(config.concurrency)
        self.batchers = {
            priority.value: Batcher(
                priority.value,
                publish,
                max_size=config.batch_size,
                linger_s=config.linger_s,
                # Consent waits for nobody: a high batch never lingers longer behind a backlog.
                backlog_linger_s=config.linger_s if priority is Priority.HIGH else config.backlog_linger_s,
                slots=slots,
                retry_max_s=config.retry_max_s,
            )
            for priority in QUEUE_ORDER
        }
        self.worker: Worker | None = None
        self.rejected = 0
        self.failed = False
        self._stop = asyncio.Event()
        self.watch = ConnectionWatch(
            {"bullmq": config.redis_url, "broker": config.broker_url},
            check_interval_s=config.connection_check_s,
            retry_max_s=config.retry_max_s,
        )

    async def process(self, job: Job, token: str) -> None:
        try:
            bridged = bridged_job(job, self.config.max_job_bytes)
            judged = parse_job(bridged)
        except Exception as exc:  # content the bridge cannot carry: a rejection record, never a failed job
            logger.warning("bridge_unreadable_job job=%s error=%s", job.id, type(exc).__name__)
            bridged = unreadable_job(str(job.id), job.name or "", job.timestamp, job.attemptsMade, job.data, exc)
            judged = parse_job(bridged)
        labels = (metrics.type_label(bridged["name"]), judged.priority.value)
        bridge_metrics.BRIDGE_JOBS_RECEIVED.labels(*labels).inc()
        if isinstance(judged, Rejection):
            self.rejected += 1
            bridge_metrics.BRIDGE_JOBS_REJECTED.labels(*labels).inc()
        await self.batchers[judged.priority.value].submit(bridged)
        bridge_metrics.BRIDGE_JOBS_PUBLISHED.labels(*labels).inc()

    def worker_options(self) -> dict:
        return {
            "connection": self.config.redis_url,
            "prefix": self.config.prefix,
            "concurrency": self.config.concurrency,
            "lockDuration": self.config.lock_duration_ms,
            "stalledInterval": self.config.stalled_interval_ms,
            "maxStalledCount": 1_000_000,  # a bridge crash must never fail a job: redeliver instead
            "removeOnComplete": {"count": self.config.keep_completed},
            "autorun": False,
            "name": "crm-bridge",
        }

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        if self.config.metrics_port:
            metrics.serve_metrics(self.config.metrics_port)
        for batcher in self.batchers.values():
            batcher.start()
        self.watch.start()
        stats_task = asyncio.create_task(self._log_stats(), name="bridge-stats")
        stop_task = asyncio.create_task(self._stop.wait())
        # bullmq would wait out a dead Redis in silence; start consuming once the watch has seen it answer.
        connected = asyncio.create_task(self.watch.wait_connected("bullmq"))
        await asyncio.wait({connected, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if self._stop.is_set():  # stopped before BullMQ's Redis ever answered: nothing was taken
            connected.cancel()
            await self._stop_background(stats_task)
            if self._publisher is not None:
                self._publisher.close()
            logger.info("bridge_stopped", extra={"published": 0, "seconds": 0.0})
            return
        self.worker = BridgeWorker(self.config.queue_name, self.process, self.worker_options())
        self.worker.on("error", self._on_worker_error)
        worker_task = asyncio.create_task(self.worker.run(), name="bullmq-worker")
        logger.info(
            "bridge_started",
            extra={
                "queue": self.config.queue_name,
                "prefix": self.config.prefix,
                "batch_size": self.config.batch_size,
                "linger_ms": int(self.config.linger_s * 1000),
                "backlog_linger_ms": int(self.config.backlog_linger_s * 1000),
                "concurrency": self.config.concurrency,
            },
        )
        await asyncio.wait({worker_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if worker_task.done() and not self._stop.is_set():
            # bullmq's run loop gave up (e.g. Redis lost while it started): exit non-zero so the supervisor restarts us.
            self.failed = True
            error = worker_task.exception() if not worker_task.cancelled() else None
            if error is not None:
                error_tracking.report(error, queue=self.config.queue_name)
            logger.error("bullmq_worker_stopped", extra={"error": describe_error(error) if error else "cancelled"})
        await self._shutdown(worker_task)
        await self._stop_background(stats_task)

    def _on_worker_error(self, err: object, *_: object) -> None:
        if isinstance(err, BaseException):
            error_tracking.report(err, queue=self.config.queue_name)
        error = describe_error(err) if isinstance(err, BaseException) else str(err)[:300]
        logger.warning("bullmq_error", extra={"error": error})

    async def _stop_background(self, stats_task: asyncio.Task) -> None:
        self.watch.stop()
        stats_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stats_task

    async def _shutdown(self, worker_task: asyncio.Task) -> None:
        started = time.monotonic()
        logger.info("bridge_stopping", extra={"in_flight": sum(b.pending for b in self.batchers.values())})
        for batcher in self.batchers.values():
            batcher.flush_now()
        assert self.worker is not None
        try:
            await asyncio.wait_for(self.worker.close(), self.config.shutdown_timeout_s)
        except TimeoutError:
            # Whatever is still active stays so in BullMQ; the stalled check redelivers it.
            logger.warning("bridge_shutdown_timeout", extra={"note": "forcing close; active jobs will be redelivered"})
            await self.worker.close(force=True)
        if not worker_task.done():
            worker_task.cancel()
        if self._publisher is not None:
            self._publisher.close()
        logger.info(
            "bridge_stopped",
            extra={
                "published": sum(b.published_jobs for b in self.batchers.values()),
                "seconds": round(time.monotonic() - started, 1),
            },
        )

    async def _log_stats(self) -> None:
        """Every `stats_interval_s`, whatever the connections do: during an outage it says connected=false."""
        # Made once the BullMQ Redis has answered: bullmq's client retries for seconds even to close.
        queue: Queue | None = None
        last_total, last_time = 0, time.monotonic()
        try:
            while True:
                await asyncio.sleep(self.config.stats_interval_s)
                total = sum(b.published_jobs for b in self.batchers.values())
                now = time.monotonic()
                fields: dict[str, object] = {
                    "connected": str(self.watch.all_connected).lower(),
                    **{f"{name}_connected": str(up).lower() for name, up in self.watch.connected.items()},
                    "rate": round((total - last_total) / max(now - last_time, 1e-9)),
                    "published": total,
                    "rejected": self.rejected,
                    **{f"pending_{name}": b.pending for name, b in self.batchers.items()},
                }
                if self.watch.connected["bullmq"]:
                    if queue is None:
                        queue = Queue(
                            self.config.queue_name, {"connection": self.config.redis_url, "prefix": self.config.prefix}
                        )
                    fields.update(await self._bullmq_figures(queue))
                logger.info("bridge_stats", extra=fields)
                last_total, last_time = total, now
        except asyncio.CancelledError:
            pass
        finally:
            if queue is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(queue.close(), STATS_QUERY_TIMEOUT_S)

    async def _bullmq_figures(self, queue: Queue) -> dict[str, object]:
        # Best-effort and bounded: bullmq's client may sit in its own retries; stats must keep coming.
        try:
            counts, lag_s = await asyncio.wait_for(
                asyncio.gather(queue.getJobCounts("waiting", "active", "failed"), self._oldest_waiting_age(queue)),
                STATS_QUERY_TIMEOUT_S,
            )
        except (OSError, RedisError, TimeoutError) as exc:
            return {"bullmq_figures": describe_error(exc)}
        bridge_metrics.BULLMQ_WAITING.set(counts.get("waiting", 0))
        bridge_metrics.BULLMQ_OLDEST_WAITING_AGE.set(lag_s)
        return {
            "waiting": counts.get("waiting", 0),
            "active": counts.get("active", 0),
            "failed": counts.get("failed", 0),
            "lag_s": round(lag_s, 1),
        }

    @staticmethod
    async def _oldest_waiting_age(queue: Queue) -> float:
        oldest = await queue.getJobs(["waiting"], 0, 0, True)
        if not oldest:
            return 0.0
        return max(0.0, time.time() - oldest[0].timestamp / 1000)


def run_forever(config: BridgeConfig) -> None:
    import uvloop

    async def main() -> bool:
        bridge = Bridge(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, bridge.request_stop)
        await bridge.run()
        return bridge.failed

    if uvloop.run(main()):
        sys.exit(1)
