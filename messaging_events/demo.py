"""The demo's effects outside the stream: its segments, and publishing its jobs to BullMQ.

The jobs themselves come from `messaging_events/streams/demo.py` (`demo_jobs`), which the tests and the bench's
generator share; `publish_demo_events` calls both.
"""

import time
from typing import Any

from crm.models import Segment
from crm.services.tenants import tenant_get_or_create
from messaging_events.services.status import bullmq_queue
from messaging_events.streams.demo import bulk_specs, demo_tenant_ids

# Two segments per demo tenant, so that a newcomer sees memberships follow the events.
# Fields as on `crm.models.Segment`: the engaged one needs a score, which opens and clicks earn.
DEMO_SEGMENTS: tuple[dict[str, Any], ...] = (
    {"name": "Email opted in", "required_consent_channel": "email"},
    {"name": "Engaged last 30 days", "min_engagement_score": 1.0},
)


def demo_segments_ensure(*, tenants: int = 3) -> int:
    """Create the demo segments of each demo tenant (and the tenant, as its first event would). Returns how many
    were new. Members are computed as the demo events are applied, like any segment's."""
    created = 0
    for external_id in demo_tenant_ids(tenants):
        tenant = tenant_get_or_create(external_id)
        for rules in DEMO_SEGMENTS:
            _, new = Segment.objects.get_or_create(
                tenant=tenant, name=rules["name"], defaults={k: v for k, v in rules.items() if k != "name"}
            )
            created += new
    return created


async def publish_jobs(jobs: list[dict[str, Any]], *, chunk: int = 500) -> int:
    """Add the jobs to the Messaging queue with `Queue.addBulk`, as the Node producer does."""
    specs = bulk_specs(jobs, now_ms=int(time.time() * 1000))
    queue = bullmq_queue()
    published = 0
    try:
        for start in range(0, len(specs), chunk):
            batch = specs[start : start + chunk]
            await queue.addBulk(batch)
            published += len(batch)
    finally:
        await queue.close()
    return published
