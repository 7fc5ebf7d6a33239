"""From a BullMQ job to a typed event, or to a rejection that says why not.

The bridge and the workers call the same `parse_job`, so a job is judged one way.
A `BridgedJob` is what one BullMQ job becomes inside a Celery message: plain JSON.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypedDict, TypeVar

from pydantic import ValidationError

from messaging_events.contract.fields import FieldWarning, check_timestamp_range
from messaging_events.contract.routing import (
    REJECTION_PRIORITY,
    EventType,
    Priority,
    event_type_from_name,
    priority_for,
)
from messaging_events.contract.schemas import OCCURRED_AT_FIELD, Payload, payload_parse

MAX_ERROR_LENGTH = 2000
# Deeper job data cannot travel: Python's JSON parser (in the worker's message decoding) stops near 1,000.
MAX_JSON_DEPTH = 64
# Job data the pipeline could not forward or store as received; a replay rejects it again.
UNREADABLE_MARKER = "_unreadable"
# Set by the bridge: data over BRIDGE_MAX_JOB_BYTES, and data that is not JSON (only a raw Redis write makes one).
OVERSIZED_MARKER = "_oversized"
UNDECODABLE_MARKER = "_undecodable"
UNREADABLE_PREVIEW_CHARS = 2000


class BridgedJob(TypedDict, total=False):
    id: str
    name: str
    timestamp: int  # BullMQ job timestamp, milliseconds since the epoch
    attemptsMade: int
    data: Any
    # Set by the bridge when it must not forward the data itself (for example oversized);
    # `key` then carries the identity computed from the full data.
    rejection: str | None
    key: str | None


@dataclass(frozen=True)
class JobMeta:
    job_id: str
    name: str
    timestamp: datetime | None
    attempts_made: int
    timestamp_ms: int | None = None  # the BullMQ timestamp as received, part of content identities


# The payload class of an event. `parse_job` returns `Event[Payload]`; each handler states the class its
# event type validates to (`SCHEMAS` in schemas.py), so the type checker sees the fields it reads.
# Covariant: the event is frozen, so an `Event[MessageBounced]` is an `Event[Payload]`.
P_co = TypeVar("P_co", bound=Payload, covariant=True)


@dataclass(frozen=True)
class Event(Generic[P_co]):
    type: EventType
    priority: Priority
    idempotency_key: str
    tenant_ref: str  # the tenant the job names, "" when it names none
    contact_id: str
    occurred_at: datetime
    payload: P_co
    job: JobMeta
    raw: Any
    # Optional values dropped or reinterpreted (partial acceptance); stored on the inbox row.
    warnings: tuple[FieldWarning, ...] = ()


@dataclass(frozen=True)
class Rejection:
    reason: str
    event_type: str
    priority: Priority
    idempotency_key: str
    tenant_ref: str
    contact_id: str
    job: JobMeta
    raw: Any


class _Invalid(Exception):
    pass


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _digest(text: str) -> str:
    # surrogatepass: a lone UTF-16 surrogate (which JSON.stringify can send) must hash, not raise.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def content_key(name: str, data: Any, job_timestamp_ms: int | None = None) -> str:
    """The identity of an event without an `eventId`: a hash of its type and canonical data, and
    of the job's timestamp when that is the only time the event has (docs/decisions.md).

    Never BullMQ's job id, which restarts from 1 if Redis loses its data.
    """
    stamp = "" if job_timestamp_ms is None else f"@{job_timestamp_ms}\n"
    text = f"{name}\n{stamp}{canonical_json(data)}"
    return f"sha256:{_digest(text)}"


def content_hash(data: Any) -> str:
    """What a job said, to tell a redelivery (same hash) from a conflict (same identity, other content)."""
    return _digest(canonical_json(data))


def _job_meta(job: BridgedJob) -> JobMeta:
    timestamp = job.get("timestamp")
    when, millis = None, None
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool) and timestamp > 0:
        try:
            when = datetime.fromtimestamp(timestamp / 1000, UTC)
            millis = int(timestamp)
        except (OverflowError, OSError, ValueError):
            when = None  # beyond the calendar: the event has no usable job time
    attempts = job.get("attemptsMade")
    return JobMeta(
        job_id=str(job.get("id") or ""),
        name=str(job.get("name") or ""),
        timestamp=when,
        attempts_made=attempts if isinstance(attempts, int) and 0 <= attempts < 2**31 else 0,
        timestamp_ms=millis,
    )


def _short_str(value: Any) -> str:
    return value if isinstance(value, str) and 0 < len(value) <= 128 else ""


def _payload_of(data: Any) -> dict | None:
    if isinstance(data, dict) and isinstance(data.get("payload"), dict):
        return data["payload"]
    return None


def _stated_event_id(data: Any) -> str:
    payload = _payload_of(data) or {}
    candidate = payload.get("eventId", data.get("eventId") if isinstance(data, dict) else None)
    return _short_str(candidate)


def identity_of(name: str, data: Any, job_timestamp_ms: int | None = None) -> str:
    """Idempotency key: the producer's `eventId` when there is one, else the content hash (with the
    job timestamp when given: see `content_key`). The inbox is unique on the type and this key."""
    return _stated_event_id(data) or content_key(name, data, job_timestamp_ms)


def _stated_tenant(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    payload = _payload_of(data) or {}
    return _short_str(data.get("tenantId")) or _short_str(payload.get("tenantId"))


def _stated_contact(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    payload = _payload_of(data) or {}
    stated_identity = data.get("identity")
    identity = stated_identity if isinstance(stated_identity, dict) else {}
    return _short_str(payload.get("contactId")) or _short_str(identity.get("messagingContactId"))


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:10]:
        location = ".".join(str(p) for p in error["loc"]) or "payload"
        parts.append(f"payload.{location}: {error['msg']}")
    return "; ".join(parts)


def _agree(label: str, *values: Any) -> str:
    stated = {v for v in values if v not in (None, "")}
    if len(stated) > 1:
        raise _Invalid(f"{label} disagree: {', '.join(sorted(map(str, stated)))}")
    return stated.pop() if stated else ""


def _parse_valid(job: BridgedJob, meta: JobMeta) -> Event[Payload]:
    event_type = event_type_from_name(meta.name)
    if event_type is None:
        raise _Invalid(f"unknown event type {meta.name[:100]!r}")
    data = job.get("data")
    if not isinstance(data, dict):
        raise _Invalid(f"job data must be a JSON object, got {type(data).__name__}")
    raw_payload = data.get("payload")
    if not isinstance(raw_payload, dict):
        raise _Invalid("job data has no `payload` object")
    stated_type = data.get("type")
    if stated_type is not None and event_type_from_name(str(stated_type)) != event_type:
        raise _Invalid(f"job name {meta.name!r} and data.type {str(stated_type)[:100]!r} disagree")
    try:
        payload, warnings = payload_parse(event_type, raw_payload)
    except ValidationError as exc:
        raise _Invalid(_format_validation_error(exc)) from None

    identity = data.get("identity")
    if identity is not None and not isinstance(identity, dict):
        raise _Invalid("data.identity must be an object")
    identity_contact = (identity or {}).get("messagingContactId")
    if identity_contact is not None and not _short_str(identity_contact):
        raise _Invalid("data.identity.messagingContactId must be a string of 1 to 128 characters")
    contact_id = _agree(
        "contact ids in payload.contactId and identity.messagingContactId", payload.contactId, identity_contact
    )
    if not contact_id:
        raise _Invalid("names no contact (payload.contactId or identity.messagingContactId)")
    top_tenant = data.get("tenantId")
    if top_tenant is not None and not _short_str(top_tenant):
        raise _Invalid("data.tenantId must be a string of 1 to 128 characters")
    tenant_ref = _agree("tenant ids in data.tenantId and payload.tenantId", top_tenant, payload.tenantId)

    occurred_at = None
    if field := OCCURRED_AT_FIELD.get(event_type):
        occurred_at = getattr(payload, field)
    # An event that states its own time is identified by its content; one that does not (or whose time
    # was dropped as invalid) happened when its job was created, so two such statements differ by their
    # job timestamp.
    job_time_in_identity = occurred_at is None
    if occurred_at is None:
        # Contact events carry no time of their own: the job's timestamp is when it happened.
        if meta.timestamp is None:
            raise _Invalid("no occurred-at: neither a payload timestamp nor a job timestamp")
        try:
            occurred_at = check_timestamp_range(meta.timestamp)
        except ValueError as exc:
            raise _Invalid(f"job timestamp {exc}") from None

    return Event(
        type=event_type,
        priority=priority_for(event_type),
        idempotency_key=job.get("key")
        or identity_of(event_type.value, data, meta.timestamp_ms if job_time_in_identity else None),
        tenant_ref=tenant_ref,
        contact_id=contact_id,
        occurred_at=occurred_at,
        payload=payload,
        job=meta,
        raw=data,
        warnings=warnings,
    )


def parse_job(job: BridgedJob) -> Event[Payload] | Rejection:
    """Judge one bridged job. Never raises: whatever its content breaks becomes a rejection's reason."""
    meta = _job_meta(job)
    data = job.get("data")
    reason = job.get("rejection")
    if not reason:
        try:
            return _parse_valid(job, meta)
        except _Invalid as exc:
            reason = str(exc)
        except Exception as exc:  # e.g. a value the validators did not foresee: recorded, never lost
            reason = f"the contract could not read the job: {type(exc).__name__}: {exc}"
    event_type = event_type_from_name(meta.name)
    name = event_type.value if event_type else meta.name
    return Rejection(
        reason=str(reason)[:MAX_ERROR_LENGTH],
        event_type=(event_type.value if event_type else meta.name[:64]) or "(no name)",
        priority=priority_for(event_type) if event_type else REJECTION_PRIORITY,
        idempotency_key=job.get("key") or _rejection_identity(name, data, meta),
        tenant_ref=_stated_tenant(data),
        contact_id=_stated_contact(data),
        job=meta,
        raw=data,
    )


def check_depth(data: Any) -> None:
    """Raise ValueError when `data` nests deeper than MAX_JSON_DEPTH (iteratively: no recursion limit)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"job data nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)


def _rejection_identity(name: str, data: Any, meta: JobMeta) -> str:
    try:
        return identity_of(name, data, meta.timestamp_ms)
    except (RecursionError, ValueError, TypeError):  # too deep to serialise: the job itself is its identity
        return f"job:{meta.job_id}@{meta.timestamp_ms}"


def unreadable_job(job_id: str, name: str, timestamp: Any, attempts: Any, data: Any, error: Exception) -> BridgedJob:
    """A job whose content broke the bridge or a worker, as a rejection record that always travels
    and stores: its data becomes a preview under `UNREADABLE_MARKER`, its reason the exception."""
    try:
        head = json.dumps(data, ensure_ascii=True, default=repr)[:UNREADABLE_PREVIEW_CHARS]
    except (RecursionError, ValueError, TypeError):
        head = f"<{type(data).__name__} that cannot be serialised>"
    safe_name = name.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    stamp = timestamp if isinstance(timestamp, int) and not isinstance(timestamp, bool) else None
    bridged: BridgedJob = {
        "id": str(job_id)[:64],
        "name": safe_name[:128],
        "timestamp": stamp or 0,
        "attemptsMade": attempts if isinstance(attempts, int) and 0 <= attempts < 2**31 else 0,
        "data": {UNREADABLE_MARKER: {"head": head}},
        "rejection": f"job content could not be processed: {type(error).__name__}: {error}"[:MAX_ERROR_LENGTH],
    }
    identity = f"{safe_name}\n@{stamp}\n{job_id}\n{head}"
    bridged["key"] = f"sha256:{_digest(identity)}"
    return bridged
