"""Conflicts: one event identity that arrived with two contents (docs/decisions.md).

The inbox keeps the content it applied (`raw_data`) and the other one (`conflict_data`), and applies
neither twice. Staff resolve an open conflict: when the other content is the newer (by BullMQ job
timestamp), it is replayed as an event of its own, under the identity `<key>#<hash prefix>`, through
the normal task path; otherwise the applied content stands. Either way the conflict is `resolved`.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from django.db import transaction
from django.utils import timezone

from messaging_events.contract.jobs import BridgedJob
from messaging_events.models import ConflictState, InboundEvent
from messaging_events.tasks import apply_event_batch as apply_event_batch_task

RESOLUTION_KEY_HASH_CHARS = 12


class Resolution(StrEnum):
    REPLAYED = "replayed"  # the other content was newer: queued as its own event
    KEPT = "kept"  # the applied content was the newer
    NOT_OPEN = "not open"


@dataclass(frozen=True)
class ConflictResolution:
    row_id: int
    resolution: Resolution
    replay_key: str = ""


def resolution_key(row: InboundEvent) -> str:
    """The replayed content's own identity: the key with the content's hash prefix (fits 128 chars)."""
    base = row.idempotency_key[: 128 - RESOLUTION_KEY_HASH_CHARS - 1]
    return f"{base}#{row.conflict_hash[:RESOLUTION_KEY_HASH_CHARS]}"


def _newer_conflict_time(row: InboundEvent) -> datetime | None:
    """The other content's job time when it is newer than the stored content's, else None."""
    conflict_time = row.conflict_job_timestamp
    if conflict_time is None or (row.job_timestamp is not None and conflict_time <= row.job_timestamp):
        return None
    return conflict_time


def conflict_resolve(*, row_id: int) -> ConflictResolution:
    """Resolve one open conflict (module doc). The replay is queued after commit."""
    with transaction.atomic():
        row = InboundEvent.objects.select_for_update().get(pk=row_id)
        if row.conflict != ConflictState.OPEN:
            return ConflictResolution(row.pk, Resolution.NOT_OPEN)
        InboundEvent.objects.filter(pk=row.pk).update(conflict=ConflictState.RESOLVED, updated_at=timezone.now())
        conflict_time = _newer_conflict_time(row)
        if conflict_time is None:
            return ConflictResolution(row.pk, Resolution.KEPT)
        key = resolution_key(row)
        job: BridgedJob = {
            "id": row.bullmq_job_id,
            "name": row.job_name or row.event_type,
            "timestamp": int(conflict_time.timestamp() * 1000),
            "attemptsMade": 0,
            "data": row.conflict_data,
            "key": key,
        }
        transaction.on_commit(
            lambda: apply_event_batch_task.apply_async(args=([job],), kwargs={"replay": True}, queue=row.priority)
        )
    return ConflictResolution(row.pk, Resolution.REPLAYED, key)
