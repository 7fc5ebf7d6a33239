"""The inbox: every event that reaches a worker is recorded once, with its outcome.

The inbox row and the event's CRM effects commit in one transaction, keyed by the
event's identity, so a redelivery finds its row and changes nothing.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg.types.json import Jsonb

from crm.errors import ApplicationError
from crm.models import Tenant
from messaging_events import error_tracking, metrics
from messaging_events.contract.jobs import BridgedJob, Event, JobMeta, Rejection, parse_job
from messaging_events.handlers import handler_for
from messaging_events.models import FINAL_STATUSES, InboundEvent, InboundEventStatus
from messaging_events.outcomes import Outcome
from messaging_events.redaction import redact

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError)
OVERSIZED_MARKER = "_oversized"
UNDECODABLE_MARKER = "_undecodable"
# Data the bridge could not forward as received: a replay must reject it again, for the same reason.
UNREADABLE_MARKERS = (OVERSIZED_MARKER, UNDECODABLE_MARKER)


@dataclass
class BatchResult:
    statuses: dict[str, int] = field(default_factory=dict)
    transient: list[tuple[BridgedJob, str]] = field(default_factory=list)
    linked_contact_ids: set[str] = field(default_factory=set)

    def count(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


def _strip_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL characters; the rest is stored as received."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    return value


_CLAIM_SQL = """
INSERT INTO messaging_events_inboundevent
    (tenant_ref, idempotency_key, event_type, priority, messaging_contact_id, bullmq_job_id, job_name,
     raw_data, occurred_at, job_timestamp, job_attempts, received_at, updated_at, status, error,
     attempts, deliveries)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now(), 'received', '', 0, 1)
ON CONFLICT (tenant_ref, idempotency_key) DO UPDATE SET
    deliveries = messaging_events_inboundevent.deliveries + %s,
    job_attempts = GREATEST(messaging_events_inboundevent.job_attempts, EXCLUDED.job_attempts),
    updated_at = now()
RETURNING id, status, (xmax = 0) AS inserted
"""


def _claim(parsed: Event | Rejection, *, count_delivery: bool) -> tuple[int, str, bool]:
    """Insert the inbox row, or find and lock the existing one. Returns (id, status, inserted)."""
    meta: JobMeta = parsed.job
    event_type = parsed.type.value if isinstance(parsed, Event) else parsed.event_type
    occurred_at = parsed.occurred_at if isinstance(parsed, Event) else None
    params = [
        _strip_nul(parsed.tenant_ref),
        _strip_nul(parsed.idempotency_key),
        _strip_nul(event_type)[:64],
        parsed.priority.value,
        _strip_nul(parsed.contact_id),
        _strip_nul(meta.job_id)[:64],
        _strip_nul(meta.name)[:128],
        Jsonb(_strip_nul(parsed.raw)),
        occurred_at,
        meta.timestamp,
        meta.attempts_made,
        1 if count_delivery else 0,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, params)
        row_id, status, inserted = cursor.fetchone()
    return row_id, status, inserted


def _finish(row_id: int, *, status: str, tenant_id: int | None, error: str, attempted: bool = True) -> None:
    now = timezone.now()
    InboundEvent.objects.filter(pk=row_id).update(
        attempts=F("attempts") + (1 if attempted else 0),
        status=status,
        tenant_id=tenant_id,
        error=_strip_nul(error)[:4000],
        applied_at=now if status == InboundEventStatus.APPLIED else None,
        updated_at=now,
    )


def _tenant_id_for_ref(tenant_ref: str) -> int | None:
    if not tenant_ref:
        return None
    return Tenant.objects.filter(external_id=tenant_ref).values_list("pk", flat=True).first()


def _apply(event: Event, row_id: int) -> Outcome:
    handler = handler_for(event.type)
    try:
        with transaction.atomic():  # a savepoint: a rejected or broken event leaves no effect behind
            return handler(event, row_id)
    except ApplicationError as exc:
        return Outcome(InboundEventStatus.REJECTED, _tenant_id_for_ref(event.tenant_ref), exc.message)
    except TRANSIENT_ERRORS:
        raise
    except DatabaseError as exc:
        if connection.needs_rollback or not connection.is_usable():
            raise
        logger.exception("event_failed key=%s type=%s", event.idempotency_key, event.type)
        return Outcome(InboundEventStatus.FAILED, _tenant_id_for_ref(event.tenant_ref), f"database error: {exc}")
    except Exception as exc:  # a bug must not poison the batch; the event stays replayable as failed
        # Reported before the log line: Sentry's logging integration would send the same exception untagged.
        error_tracking.report(exc, event_type=event.type.value, key=event.idempotency_key)
        logger.exception("event_failed key=%s type=%s", event.idempotency_key, event.type)
        return Outcome(
            InboundEventStatus.FAILED,
            _tenant_id_for_ref(event.tenant_ref),
            f"internal error: {type(exc).__name__}: {exc}",
        )


def process_job(job: BridgedJob, *, replay: bool = False) -> tuple[str, Outcome | None]:
    """Apply one bridged job exactly once in effect. Returns the final status and the outcome if it ran.

    With `replay`, a rejected row is judged again (the rules or the data may have changed);
    applied and ignored rows never run twice.
    """
    started = time.perf_counter()
    parsed = parse_job(job)
    with transaction.atomic():
        row_id, status, inserted = _claim(parsed, count_delivery=not replay)
        rerunnable = inserted or status not in FINAL_STATUSES
        if replay and status == InboundEventStatus.REJECTED:
            rerunnable = True
        if not rerunnable:
            metrics.record_event(_event_type(parsed), "duplicate")
            return status, None
        if isinstance(parsed, Rejection):
            outcome = Outcome(InboundEventStatus.REJECTED, _tenant_id_for_ref(parsed.tenant_ref), parsed.reason)
        else:
            outcome = _apply(parsed, row_id)
        _finish(row_id, status=outcome.status, tenant_id=outcome.tenant_id, error=outcome.note)
    _log_outcome(parsed, outcome, time.perf_counter() - started)
    return outcome.status, outcome


def _event_type(parsed: Event | Rejection) -> str:
    return parsed.type.value if isinstance(parsed, Event) else parsed.event_type


def _log_outcome(parsed: Event | Rejection, outcome: Outcome, seconds: float) -> None:
    # Ids only: emails and phone numbers are personal data and never reach the logs.
    event_type = _event_type(parsed)
    metrics.record_event(event_type, outcome.status, seconds)
    level = (
        logging.INFO if outcome.status in (InboundEventStatus.APPLIED, InboundEventStatus.IGNORED) else logging.WARNING
    )
    logger.log(
        level,
        f"event_{outcome.status}",
        extra={
            "event_type": event_type,
            "key": parsed.idempotency_key,
            "status": outcome.status,
            "tenant": parsed.tenant_ref,
            "job": parsed.job.job_id,
            "contact": parsed.contact_id,
            "reason": redact(outcome.note) if outcome.status != InboundEventStatus.APPLIED else "",
            "duration_ms": round(seconds * 1000, 1),
        },
    )


def process_batch(jobs: list[BridgedJob], *, replay: bool = False) -> BatchResult:
    """Each job in its own transaction: one bad event never fails its batch-mates."""
    result = BatchResult()
    for job in jobs:
        try:
            status, outcome = process_job(job, replay=replay)
        except TRANSIENT_ERRORS as exc:
            metrics.record_event(str(job.get("name", "")), "transient")
            logger.warning("event_transient_error job=%s error=%s", job.get("id"), type(exc).__name__)
            result.transient.append((job, f"{type(exc).__name__}: {exc}"))
            continue
        result.count(status)
        if outcome is not None:
            result.linked_contact_ids.update(outcome.linked_contact_ids)
    return result


def record_failure(job: BridgedJob, error: str) -> None:
    """After its retries, an event that kept hitting transient errors ends as `failed`, replayable."""
    parsed = parse_job(job)
    with transaction.atomic():
        row_id, status, _ = _claim(parsed, count_delivery=False)
        if status in FINAL_STATUSES:
            return
        _finish(
            row_id,
            status=InboundEventStatus.FAILED,
            tenant_id=_tenant_id_for_ref(parsed.tenant_ref),
            error=error,
            attempted=False,
        )
    logger.error("event_failed key=%s job=%s error=%s", parsed.idempotency_key, parsed.job.job_id, error[:200])


def job_from_row(row: InboundEvent) -> BridgedJob:
    """Rebuild the bridged job an inbox row came from, for replays and parked events."""
    timestamp = row.job_timestamp or row.occurred_at or datetime.now(UTC)
    job: BridgedJob = {
        "id": row.bullmq_job_id,
        "name": row.job_name or row.event_type,
        "timestamp": int(timestamp.timestamp() * 1000),
        "attemptsMade": row.job_attempts,
        "data": row.raw_data,
        "key": row.idempotency_key,
    }
    if isinstance(row.raw_data, dict) and any(marker in row.raw_data for marker in UNREADABLE_MARKERS):
        job["rejection"] = row.error
    return job
