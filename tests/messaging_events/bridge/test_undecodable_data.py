"""A job whose data is not JSON (only a raw Redis write can make one) is rejected and completed, not looped."""

import pytest
import redis
from django.conf import settings

from messaging_events.models import InboundEvent, InboundEventStatus
from tests.messaging_events.samples import contact_job
from tests.processes import Processes, bullmq_counts, publish_jobs, wait_for_quiescence

pytestmark = pytest.mark.processes


def test_undecodable_job_data_ends_rejected_and_completed(processes: Processes) -> None:
    job_ids = publish_jobs(
        [
            contact_job("contact.deleted", {"eventId": "raw-1", "tenantId": "t-raw", "contactId": "c-raw-1"}),
            contact_job("contact.deleted", {"eventId": "ok-1", "tenantId": "t-raw", "contactId": "c-ok-1"}),
        ],
        ids=True,
    )
    client = redis.Redis.from_url(settings.BULLMQ_REDIS_URL)
    client.hset(f"{settings.BULLMQ_PREFIX}:{settings.BULLMQ_QUEUE}:{job_ids[0]}", "data", "{not json <<<")

    processes.start_bridge(wait=False)
    processes.start_worker(wait=False)
    processes.wait_ready()
    wait_for_quiescence(timeout=60, min_inbox_rows=2)

    rejected = InboundEvent.objects.get(status=InboundEventStatus.REJECTED)
    assert rejected.error == "job data is not valid JSON"
    assert rejected.bullmq_job_id == job_ids[0]
    assert rejected.raw_data == {"_undecodable": {"head": "{not json <<<"}}
    assert InboundEvent.objects.get(idempotency_key="ok-1").status == InboundEventStatus.IGNORED
    counts = bullmq_counts()
    assert counts["active"] == 0 and counts["waiting"] == 0 and counts["failed"] == 0
    assert counts["completed"] == 2
