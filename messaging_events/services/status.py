"""Selectors for `bridge_status`: what is waiting where, on both sides of the bridge.

Read-only. BullMQ figures come from the `bullmq` Queue API; Celery queue depths are
LLEN on the broker's Redis over every list kombu uses for a queue (`messaging_events.broker`).
"""

import asyncio
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import redis
from bullmq import Queue
from django.conf import settings
from django.db.models import Count, Min, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from messaging_events import broker, inflight_register
from messaging_events.connections import describe_error, mask_url, ping
from messaging_events.models import ConflictState, InboundEvent, InboundEventStatus

BULLMQ_STATES = ("waiting", "active", "delayed", "failed", "completed")
BULLMQ_TIMEOUT_S = 10.0


@dataclass
class ParkedEvent:
    id: int
    event_type: str
    tenant_ref: str
    contact_id: str
    received_at: str
    age_s: float


@dataclass
class BridgeStatus:
    bullmq_queue: str
    bullmq: dict[str, int]
    oldest_waiting_age_s: float | None
    celery_queues: dict[str, int]
    inbox_last_hour: dict[str, int]
    inbox_total: dict[str, int]
    oldest_parked: ParkedEvent | None
    open_conflicts: int = 0  # same identity, different content; any is a problem
    # Applied without some optional values the contract dropped: for follow-up, never a problem.
    applied_with_warnings: int = 0
    # Batches the bridge published that no worker has finished yet (services.inflight).
    inflight_batches: int = 0
    inflight_oldest_age_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "healthy": self.healthy}


def bullmq_queue() -> Queue:
    """The Messaging service's queue, as the bridge sees it. The caller closes it."""
    return Queue(settings.BULLMQ_QUEUE, {"connection": settings.BULLMQ_REDIS_URL, "prefix": settings.BULLMQ_PREFIX})


async def _bullmq_figures() -> tuple[dict[str, int], float | None]:
    queue = bullmq_queue()
    try:
        counts = await queue.getJobCounts(*BULLMQ_STATES)
        # "prioritized" jobs are waiting too: they sit in another set.
        prioritized = (await queue.getJobCounts("prioritized")).get("prioritized", 0)
        oldest = await queue.getJobs(["waiting", "prioritized"], 0, 0, True)
    finally:
        await queue.close()
    figures = {state: int(counts.get(state, 0)) for state in BULLMQ_STATES}
    figures["waiting"] += int(prioritized)
    age = None
    if oldest:
        age = max(0.0, time.time() - min(job.timestamp for job in oldest) / 1000)
    return figures, age


def celery_queue_depths(queues: tuple[str, ...] | None = None) -> dict[str, int]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        return broker.queue_depths(client, queues)
    finally:
        client.close()


def _status_counts(since: datetime | None = None) -> dict[str, int]:
    rows = InboundEvent.objects.all()
    if since is not None:
        rows = rows.filter(received_at__gte=since)
    counts = {status.value: 0 for status in InboundEventStatus}
    for row in rows.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def inbox_applied_with_warnings(events: QuerySet | None = None) -> QuerySet:
    """Applied events whose contract dropped or reinterpreted an optional value (partial acceptance)."""
    rows = InboundEvent.objects.all() if events is None else events
    return rows.filter(status=InboundEventStatus.APPLIED).exclude(warnings=[])


def _oldest_parked(now: datetime, events: QuerySet | None = None) -> ParkedEvent | None:
    parked = (InboundEvent.objects.all() if events is None else events).filter(status=InboundEventStatus.PARKED)
    oldest_at = parked.aggregate(at=Min("received_at"))["at"]
    if oldest_at is None:
        return None
    row = parked.filter(received_at=oldest_at).order_by("id").first()
    if row is None:  # replayed between the two queries
        return None
    return ParkedEvent(
        id=row.pk,
        event_type=row.event_type,
        tenant_ref=row.tenant_ref,
        contact_id=row.messaging_contact_id,
        received_at=row.received_at.isoformat(),
        age_s=round((now - row.received_at).total_seconds(), 1),
    )


def threshold_problems(status: BridgeStatus) -> list[str]:
    """Which STATUS_* thresholds the figures cross; empty when healthy."""
    problems = []
    if status.oldest_waiting_age_s is not None and status.oldest_waiting_age_s > settings.STATUS_MAX_WAITING_AGE_S:
        problems.append(
            f"oldest waiting BullMQ job is {status.oldest_waiting_age_s:.0f}s old "
            f"(STATUS_MAX_WAITING_AGE_S={settings.STATUS_MAX_WAITING_AGE_S})"
        )
    if status.bullmq["failed"] > settings.STATUS_MAX_FAILED_JOBS:
        problems.append(
            f"{status.bullmq['failed']} failed BullMQ jobs (STATUS_MAX_FAILED_JOBS={settings.STATUS_MAX_FAILED_JOBS})"
        )
    for name, depth in status.celery_queues.items():
        if depth > settings.STATUS_MAX_QUEUE_DEPTH:
            problems.append(
                f"Celery queue {name} holds {depth} messages (STATUS_MAX_QUEUE_DEPTH={settings.STATUS_MAX_QUEUE_DEPTH})"
            )
    if status.inflight_oldest_age_s is not None and status.inflight_oldest_age_s > settings.STATUS_MAX_INFLIGHT_AGE_S:
        problems.append(
            f"oldest in-flight batch was published {status.inflight_oldest_age_s:.0f}s ago and no worker has "
            f"finished it (STATUS_MAX_INFLIGHT_AGE_S={settings.STATUS_MAX_INFLIGHT_AGE_S})"
        )
    if status.oldest_parked is not None and status.oldest_parked.age_s > settings.STATUS_MAX_PARKED_AGE_S:
        problems.append(
            f"parked event {status.oldest_parked.id} is {status.oldest_parked.age_s:.0f}s old "
            f"(STATUS_MAX_PARKED_AGE_S={settings.STATUS_MAX_PARKED_AGE_S})"
        )
    if status.open_conflicts:
        problems.append(
            f"{status.open_conflicts} inbox event(s) with an open conflict: the same identity arrived with "
            "other content (admin inbox, filter conflict=open)"
        )
    return problems


def bridge_status_get(*, now: datetime | None = None) -> BridgeStatus:
    now = now or timezone.now()
    unreachable = []
    try:
        # bullmq's client retries a refused connection for minutes; a plain ping answers at once.
        ping(settings.BULLMQ_REDIS_URL)
        bullmq_counts, oldest_waiting = asyncio.run(asyncio.wait_for(_bullmq_figures(), BULLMQ_TIMEOUT_S))
    except (OSError, redis.RedisError, TimeoutError) as exc:
        bullmq_counts, oldest_waiting = dict.fromkeys(BULLMQ_STATES, 0), None
        reason = f"no answer in {BULLMQ_TIMEOUT_S:.0f}s" if isinstance(exc, TimeoutError) else describe_error(exc)
        unreachable.append(f"cannot read the BullMQ queue at {mask_url(settings.BULLMQ_REDIS_URL)}: {reason}")
    try:
        depths = celery_queue_depths()
        register = inflight_register.figures()
    except (OSError, redis.RedisError) as exc:
        depths = dict.fromkeys(settings.CELERY_QUEUE_NAMES, 0)
        register = inflight_register.RegisterFigures(batches=0, oldest_age_s=None)
        broker_url = mask_url(settings.CELERY_BROKER_URL)
        unreachable.append(f"cannot read the Celery broker at {broker_url}: {describe_error(exc)}")
    status = BridgeStatus(
        bullmq_queue=settings.BULLMQ_QUEUE,
        bullmq=bullmq_counts,
        oldest_waiting_age_s=None if oldest_waiting is None else round(oldest_waiting, 1),
        celery_queues=depths,
        inbox_last_hour=_status_counts(now - timedelta(hours=1)),
        inbox_total=_status_counts(),
        oldest_parked=_oldest_parked(now),
        open_conflicts=InboundEvent.objects.filter(conflict=ConflictState.OPEN).count(),
        applied_with_warnings=inbox_applied_with_warnings().count(),
        inflight_batches=register.batches,
        inflight_oldest_age_s=register.oldest_age_s,
    )
    status.problems = unreachable + threshold_problems(status)
    return status


# --- Selectors for the admin pipeline page: the same figures, over a queryset the caller scopes ---


@dataclass
class HourOutcomes:
    hour: datetime
    counts: dict[str, int]


def inbox_hourly_outcomes(events: QuerySet, *, now: datetime, hours: int = 24) -> list[HourOutcomes]:
    """Inbox rows received per hour and status, oldest hour first, every hour present (zeros included)."""
    last = now.replace(minute=0, second=0, microsecond=0)
    first = last - timedelta(hours=hours - 1)
    slots = {first + timedelta(hours=n): dict.fromkeys(InboundEventStatus.values, 0) for n in range(hours)}
    rows = (
        events.filter(received_at__gte=first)
        .order_by()
        .annotate(hour=TruncHour("received_at", tzinfo=UTC))
        .values("hour", "status")
        .annotate(n=Count("id"))
    )
    for row in rows:
        if row["hour"] in slots:
            slots[row["hour"]][row["status"]] = row["n"]
    return [HourOutcomes(hour, counts) for hour, counts in slots.items()]


def inbox_top_rejections(events: QuerySet, *, limit: int = 10) -> list[tuple[str, int]]:
    """The most frequent rejection reasons (the inbox `error` text) with their counts."""
    rows = (
        events.filter(status=InboundEventStatus.REJECTED)
        .order_by()
        .values("error")
        .annotate(n=Count("id"))
        .order_by("-n", "error")[:limit]
    )
    return [(row["error"], row["n"]) for row in rows]


def inbox_parked_summary(events: QuerySet, *, now: datetime) -> tuple[int, ParkedEvent | None]:
    """How many events are parked, and the oldest of them."""
    return events.filter(status=InboundEventStatus.PARKED).count(), _oldest_parked(now, events)
