"""The inbox: every event that reaches a worker is recorded once, with its outcome.

The inbox row and the event's CRM effects commit in one transaction, keyed by the
event's identity, so a redelivery finds its row and changes nothing.
"""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, DataError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg.types.json import Jsonb

from crm.errors import ApplicationError
from crm.models import ContactLink, Tenant
from crm.services.prepared import prepared_cursor
from messaging_events import error_tracking, metrics
from messaging_events.contract.jobs import (
    OVERSIZED_MARKER,
    UNDECODABLE_MARKER,
    UNREADABLE_MARKER,
    BridgedJob,
    Event,
    JobMeta,
    Rejection,
    content_hash,
    parse_job,
    unreadable_job,
)
from messaging_events.contract.schemas import Payload
from messaging_events.handlers import handler_for
from messaging_events.models import FINAL_STATUSES, InboundEvent, InboundEventStatus
from messaging_events.outcomes import Outcome
from messaging_events.redaction import redact

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError)
# Data the bridge could not forward as received: a replay must reject it again, for the same reason.
UNREADABLE_MARKERS = (OVERSIZED_MARKER, UNDECODABLE_MARKER, UNREADABLE_MARKER)
TIME_LIMIT_ERROR = "the batch reached its soft time limit before this event was applied"
_SURROGATES = str.maketrans({code: "\ufffd" for code in range(0xD800, 0xE000)} | {0: "\ufffd"})


@dataclass
class BatchResult:
    statuses: dict[str, int] = field(default_factory=dict)
    transient: list[tuple[BridgedJob, str]] = field(default_factory=list)
    linked_contact_ids: set[str] = field(default_factory=set)

    def count(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


def _strip_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb hold neither NUL characters nor lone UTF-16 surrogates (which
    JSON.stringify can send), nor non-finite numbers; each becomes U+FFFD (or null). The rest is
    stored as received."""
    if isinstance(value, str):
        return value.translate(_SURROGATES)
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# The identity is (tenant_ref, event_type, idempotency_key). A delivery whose content differs from
# the row's (and from a conflict already seen) opens a conflict and keeps that content; it is never
# applied. A replay's content is the row's own (or an operator's correction): it becomes the row's.
# Rows from before content hashes take the first redelivery's hash.
_SAME_CONTENT = """(%(replay)s OR inbox.content_hash = ''
    OR EXCLUDED.content_hash IN (inbox.content_hash, inbox.conflict_hash))"""


def claim_conflict_sql(same_content: str) -> str:
    """The claim's `DO UPDATE` assignments that open a conflict unless `same_content` holds; shared by
    this claim and the set-based one (`batch_apply`), whose rows are aliased `inbox` as here."""
    return f"""    conflict = CASE WHEN {same_content} THEN inbox.conflict ELSE 'open' END,
    conflict_data = CASE WHEN {same_content} THEN inbox.conflict_data ELSE EXCLUDED.raw_data END,
    conflict_job_timestamp = CASE WHEN {same_content} THEN inbox.conflict_job_timestamp
                                  ELSE EXCLUDED.job_timestamp END,
    conflict_hash = CASE WHEN {same_content} THEN inbox.conflict_hash ELSE EXCLUDED.content_hash END,"""


_CLAIM_SQL = f"""
INSERT INTO messaging_events_inboundevent AS inbox
    (tenant_ref, idempotency_key, event_type, priority, messaging_contact_id, bullmq_job_id, job_name,
     raw_data, occurred_at, job_timestamp, job_attempts, received_at, updated_at, status, error,
     attempts, deliveries, content_hash, conflict, conflict_hash)
VALUES (%(tenant_ref)s, %(key)s, %(event_type)s, %(priority)s, %(contact_id)s, %(job_id)s, %(job_name)s,
        %(raw)s, %(occurred_at)s, %(job_timestamp)s, %(job_attempts)s, now(), now(), 'received', '',
        0, 1, %(hash)s, '', '')
ON CONFLICT (tenant_ref, event_type, idempotency_key) DO UPDATE SET
    deliveries = inbox.deliveries + %(delivery)s,
    job_attempts = GREATEST(inbox.job_attempts, EXCLUDED.job_attempts),
    content_hash = CASE WHEN %(replay)s OR inbox.content_hash = '' THEN EXCLUDED.content_hash
                        ELSE inbox.content_hash END,
{claim_conflict_sql(_SAME_CONTENT)}
    updated_at = now()
RETURNING id, status, (xmax = 0) AS inserted, content_hash <> %(hash)s AS other_content
"""


@dataclass(frozen=True)
class Claim:
    row_id: int
    status: str
    inserted: bool
    other_content: bool  # same identity, different content: a conflict, never applied


def _claim(parsed: Event[Payload] | Rejection, *, count_delivery: bool, replay: bool = False) -> Claim:
    """Insert the inbox row, or find and lock the existing one."""
    meta: JobMeta = parsed.job
    raw = _strip_nul(parsed.raw)
    params = {
        "tenant_ref": _strip_nul(parsed.tenant_ref),
        "key": _strip_nul(parsed.idempotency_key),
        "event_type": _strip_nul(_type_of(parsed))[:64],
        "priority": parsed.priority.value,
        "contact_id": _strip_nul(parsed.contact_id),
        "job_id": _strip_nul(meta.job_id)[:64],
        "job_name": _strip_nul(meta.name)[:128],
        "raw": Jsonb(raw),
        "occurred_at": parsed.occurred_at if isinstance(parsed, Event) else None,
        "job_timestamp": meta.timestamp,
        "job_attempts": meta.attempts_made,
        "hash": content_hash(raw),
        "delivery": 1 if count_delivery else 0,
        "replay": replay,
    }
    with prepared_cursor() as cursor:
        cursor.execute(_CLAIM_SQL, params)
        row_id, status, inserted, other_content = cursor.fetchone()
    return Claim(row_id, status, inserted, other_content)


def warnings_of(parsed: Event[Payload] | Rejection) -> list[dict[str, str]]:
    """The row's `warnings` for this judgement: the values the contract dropped (none for a rejection).
    Recomputed from the data at every judgement, so a replay gives the same list."""
    if isinstance(parsed, Rejection):
        return []
    return [_strip_nul(warning.as_json()) for warning in parsed.warnings]


def _finish(
    row_id: int,
    *,
    status: str,
    tenant_id: int | None,
    error: str,
    warnings: list[dict[str, str]],
    attempted: bool = True,
) -> None:
    now = timezone.now()
    InboundEvent.objects.filter(pk=row_id).update(
        attempts=F("attempts") + (1 if attempted else 0),
        status=status,
        tenant_id=tenant_id,
        error=_strip_nul(error)[:4000],
        warnings=warnings,
        applied_at=now if status == InboundEventStatus.APPLIED else None,
        updated_at=now,
    )


def _tenant_of(parsed: Event[Payload] | Rejection) -> int | None:
    """The tenant whose staff see an event that did not apply: the one it names (when known; a
    rejection never creates a tenant), else, when it names none, its contact link's. Looked up by the
    values as stored: a NUL in a rejected event's ids must not break the lookup."""
    if parsed.tenant_ref:
        tenant = Tenant.objects.filter(external_id=_strip_nul(parsed.tenant_ref))
        return tenant.values_list("pk", flat=True).first()
    if parsed.contact_id:
        link = ContactLink.objects.filter(messaging_contact_id=_strip_nul(parsed.contact_id))
        return link.values_list("tenant_id", flat=True).first()
    return None


class _NotApplied(Exception):
    """A handler that raised: the event is recorded with this status and note, without its effects.
    `database_error`: the database refused something, so the connection must still be usable."""

    def __init__(self, status: InboundEventStatus, note: str, database_error: DatabaseError | None = None) -> None:
        super().__init__(note)
        self.status, self.note, self.database_error = status, note, database_error


def _apply(event: Event[Payload], source_event_id: int) -> Outcome:
    """Run the event's handler. A handler that raises leaves effects behind in the event's transaction,
    so every failure that is the event's own is raised as `_NotApplied`: the transaction rolls back as a
    whole, claim included, and `process_job` records the outcome in a new one. No savepoint
    around the handler: that is two round trips per event, for an outcome that is rare."""
    handler = handler_for(event.type)
    try:
        return handler(event, source_event_id)
    except ApplicationError as exc:
        raise _NotApplied(InboundEventStatus.REJECTED, exc.message) from exc
    except (*TRANSIENT_ERRORS, SoftTimeLimitExceeded):  # the batch hands this event to a retry
        raise
    except DataError as exc:  # a value the database refuses: the event's content, so a rejection
        raise _NotApplied(InboundEventStatus.REJECTED, f"the database refused a value: {exc}", exc) from exc
    except DatabaseError as exc:
        logger.exception("event_failed key=%s type=%s", event.idempotency_key, event.type)
        raise _NotApplied(InboundEventStatus.FAILED, f"database error: {exc}", exc) from exc
    except Exception as exc:  # a bug must not poison the batch; the event stays replayable as failed
        # Reported before the log line: Sentry's logging integration would send the same exception untagged.
        error_tracking.report(exc, event_type=event.type.value, key=event.idempotency_key)
        logger.exception("event_failed key=%s type=%s", event.idempotency_key, event.type)
        raise _NotApplied(InboundEventStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}") from exc


def status_runnable(status: str, *, replay: bool) -> bool:
    """Whether a claimed row in this status is judged again: one not final yet, or a rejected one on replay."""
    return status not in FINAL_STATUSES or (replay and status == InboundEventStatus.REJECTED)


def _runnable(parsed: Event[Payload] | Rejection, claim: Claim, *, replay: bool) -> bool:
    """Whether the claimed event is judged now: a new or unfinished row (a rejected one too, on replay),
    never a conflicting delivery (logged here) and never a duplicate of a final row (counted here)."""
    if claim.other_content:
        logger.warning(
            "event_conflict key=%s type=%s job=%s", parsed.idempotency_key, _type_of(parsed), parsed.job.job_id
        )
        return False
    if claim.inserted or status_runnable(claim.status, replay=replay):
        return True
    metrics.record_event(_type_of(parsed), "duplicate")
    return False


def process_job(job: BridgedJob, *, replay: bool = False) -> tuple[str, Outcome | None]:
    """Apply one bridged job exactly once in effect. Returns the final status and the outcome if it ran.

    With `replay`, a rejected row is judged again (the rules or the data may have changed);
    applied and ignored rows never run twice.
    """
    started = time.perf_counter()
    parsed = parse_job(job)
    try:
        status, outcome = _claim_and_judge(parsed, replay=replay, judge=lambda row_id: _judge(parsed, row_id))
    except _NotApplied as not_applied:  # rolled back: its effects and its claim alike
        if not_applied.database_error is not None and not connection.is_usable():
            raise not_applied.database_error from None
        # Claimed again in a transaction of its own, so the delivery counts once. Another worker may have
        # finished the row in between: then this is a duplicate, as a moment's later arrival would be.
        failed_as, note = not_applied.status, not_applied.note
        status, outcome = _claim_and_judge(
            parsed, replay=replay, judge=lambda _row_id: Outcome(failed_as, _tenant_of(parsed), note)
        )
    if outcome is None:
        return status, None
    _log_outcome(parsed, outcome, time.perf_counter() - started)
    return outcome.status, outcome


def _judge(parsed: Event[Payload] | Rejection, row_id: int) -> Outcome:
    if isinstance(parsed, Rejection):
        return Outcome(InboundEventStatus.REJECTED, _tenant_of(parsed), parsed.reason)
    return _apply(parsed, row_id)


def _claim_and_judge(
    parsed: Event[Payload] | Rejection, *, replay: bool, judge: Callable[[int], Outcome]
) -> tuple[str, Outcome | None]:
    """In one transaction: claim the event's row and, if it is to be judged now (`_runnable`), record
    `judge(row_id)`'s outcome on it. Returns the row's status, and the outcome if judged."""
    with transaction.atomic():
        claim = _claim(parsed, count_delivery=not replay, replay=replay)
        if not _runnable(parsed, claim, replay=replay):
            return claim.status, None
        outcome = judge(claim.row_id)
        _finish(
            claim.row_id,
            status=outcome.status,
            tenant_id=outcome.tenant_id,
            error=outcome.note,
            warnings=warnings_of(parsed),
        )
    return outcome.status, outcome


def _type_of(parsed: Event[Payload] | Rejection) -> str:
    return parsed.type.value if isinstance(parsed, Event) else parsed.event_type


def _log_outcome(parsed: Event[Payload] | Rejection, outcome: Outcome, seconds: float) -> None:
    # Ids only: emails and phone numbers are personal data and never reach the logs.
    event_type = _type_of(parsed)
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
            # The fields only: a dropped value may be an email or a phone number.
            "warnings": ",".join(w["field"] for w in warnings_of(parsed)),
        },
    )


def process_batch(jobs: list[BridgedJob], *, replay: bool = False) -> BatchResult:
    """Each job in its own transaction: one bad event never fails its batch-mates.

    No job leaves here unrecorded: transient errors and the soft time limit hand the job (and, for
    the time limit, every job not reached) back to the task to retry; any other exception, which
    only the job's content can cause, is recorded as a rejection of that job.
    """
    result = BatchResult()
    for position, job in enumerate(jobs):
        try:
            status, outcome = process_job(job, replay=replay)
        except TRANSIENT_ERRORS as exc:
            metrics.record_event(str(job.get("name", "")), "transient")
            logger.warning("event_transient_error job=%s error=%s", job.get("id"), type(exc).__name__)
            result.transient.append((job, f"{type(exc).__name__}: {exc}"))
            continue
        except SoftTimeLimitExceeded:
            logger.warning("batch_soft_time_limit unfinished=%d", len(jobs) - position)
            result.transient.extend((unfinished, TIME_LIMIT_ERROR) for unfinished in jobs[position:])
            break
        except Exception as exc:  # the job's content broke something beyond the contract: record it
            logger.exception("event_unprocessable job=%s", job.get("id"))
            try:
                status, outcome = process_job(_as_unreadable(job, exc))
            except TRANSIENT_ERRORS as again:
                result.transient.append((job, f"{type(again).__name__}: {again}"))
                continue
        result.count(status)
        if outcome is not None:
            result.linked_contact_ids.update(outcome.linked_contact_ids)
    return result


def _as_unreadable(job: BridgedJob, error: Exception) -> BridgedJob:
    return unreadable_job(
        str(job.get("id") or ""),
        str(job.get("name") or ""),
        job.get("timestamp"),
        job.get("attemptsMade"),
        job.get("data"),
        error,
    )


def record_failure(job: BridgedJob, error: str) -> None:
    """After its retries, an event that kept hitting transient errors ends as `failed`, replayable."""
    parsed = parse_job(job)
    with transaction.atomic():
        claim = _claim(parsed, count_delivery=False)
        row_id, status = claim.row_id, claim.status
        if status in FINAL_STATUSES or claim.other_content:
            return
        _finish(
            row_id,
            status=InboundEventStatus.FAILED,
            tenant_id=_tenant_of(parsed),
            error=error,
            warnings=warnings_of(parsed),
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
        # The row's identity, whatever the rules that computed it when the event first arrived.
        "key": row.idempotency_key,
    }
    if isinstance(row.raw_data, dict) and any(marker in row.raw_data for marker in UNREADABLE_MARKERS):
        job["rejection"] = row.error
    return job
