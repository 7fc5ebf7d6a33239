"""Diagnostic only (BENCH_INBOX_ONLY=1): every event type's handler does nothing and reports applied.

Imported into the bench's workers with `celery worker --include bench.inbox_only`. With it the end-to-end
figure is the pipeline's ceiling without CRM work: bridge, Celery, and the inbox claim and finish.
Never used by the figures that the targets judge.
"""

from typing import Any

from messaging_events.contract.jobs import Event
from messaging_events.contract.routing import EventType
from messaging_events.handlers import HANDLERS
from messaging_events.models import InboundEventStatus
from messaging_events.outcomes import Outcome


def _record_only(event: Event[Any], row: int) -> Outcome:
    # Applied without a tenant, which no real handler reports (`Outcome.applied` requires one).
    return Outcome(InboundEventStatus.APPLIED, None, "inbox-only benchmark")


for _event_type in EventType:
    HANDLERS[_event_type] = _record_only
