"""The process harness itself: children start, see the test database, and stop cleanly."""

import pytest

from tests.processes import (
    Processes,
    bullmq_counts,
    celery_queue_depths,
    inbox_counts,
    publish_jobs,
    wait_for_quiescence,
)


@pytest.mark.processes
def test_bridge_and_worker_start_publish_and_stop(processes: Processes) -> None:
    bridge = processes.start_bridge(wait=False)
    worker = processes.start_worker(concurrency=1, wait=False)
    processes.wait_ready()
    ids = publish_jobs(
        [{"name": "contact.deleted", "data": {"payload": {"eventId": "h-1", "tenantId": "t", "contactId": "c"}}}],
        ids=True,
    )
    assert ids == ["1"]
    snap = wait_for_quiescence(timeout=30, min_inbox_rows=1)
    assert inbox_counts() == {"ignored": 1}
    assert bullmq_counts()["completed"] == 1
    assert celery_queue_depths() == {"high": 0, "normal": 0, "low": 0, "unacked": 0}
    assert snap["inbox_rows"] == 1
    assert bridge.stop() == 0
    assert worker.stop() == 0
