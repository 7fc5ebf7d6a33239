"""kombu's gap, end to end: a Celery message taken off its queue by a consumer that dies before
copying it into `unacked` is lost to the broker after BullMQ completed its jobs. The in-flight
register finds it and publishes it again; every event is applied once, delivered once."""

import json

import pytest
import redis
from django.conf import settings

from tests.processes import Processes, bullmq_counts, celery_queue_depths, publish_jobs, wait_until
from tests.reliability.in_flight import batch_message, deliveries
from tests.reliability.stream import BEAT_ENV, assert_invariants, known_stream, report, settle

pytestmark = [pytest.mark.processes, pytest.mark.timeout(300)]

# The grace period must exceed the bridge's longest publish retry (system check messaging_events.E002).
BRIDGE_ENV = {"BRIDGE_BATCH_SIZE": "8", "BRIDGE_PUBLISH_RETRY_MAX_S": "1"}
WORKER_ENV = {"INFLIGHT_GRACE_S": "2"}
FAST_RECONCILE_BEAT_ENV = {**BEAT_ENV, "INFLIGHT_RECONCILE_INTERVAL_S": "1"}


def _take_a_batch_and_die() -> tuple[str, tuple[str, ...]]:
    """What a worker main process killed between BRPOP and the `unacked` write does to a message."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        for queue in settings.CELERY_QUEUE_NAMES:
            raw = client.rpop(queue)
            if raw is not None:
                batch = batch_message(json.loads(raw))
                assert batch is not None
                return batch.task_id, batch.keys
    finally:
        client.close()
    raise AssertionError("no Celery message to lose")


def test_a_message_the_broker_lost_is_published_again_and_applied_once(processes: Processes) -> None:
    stream = known_stream("lm", 40)
    processes.start_bridge(env=BRIDGE_ENV)
    publish_jobs(stream.jobs)
    # Every job completed in BullMQ: from here on only the Celery messages carry the events.
    wait_until(lambda: bullmq_counts()["completed"] == stream.size, 60)
    queued_before = sum(celery_queue_depths().values())
    lost_task, lost_keys = _take_a_batch_and_die()
    assert lost_keys

    worker = processes.start_worker(env=WORKER_ENV, wait=False)
    processes.start_beat(env=FAST_RECONCILE_BEAT_ENV, wait=False)
    processes.wait_ready()
    settle()

    assert_invariants(stream, deliveries=1)
    assert set(deliveries(list(lost_keys)).values()) == {1}
    republished = [line for line in worker.output().splitlines() if "inflight_republished" in line]
    assert len(republished) == 1 and f"task={lost_task}" in republished[0], republished
    report(
        "message lost between BRPOP and unacked",
        events=stream.size,
        queued_messages=queued_before,
        lost_batch_events=len(lost_keys),
    )
