"""Kill the processes, restart the servers, publish twice: then count. Nothing lost, nothing doubled.

Each scenario publishes a known stream with the real Node BullMQ client, injects its fault while the
real bridge and Celery workers are working, waits for quiescence and checks `assert_invariants`.
"""

import base64
import json
import os
import signal
import time

import psutil
import pytest
import redis
from django.conf import settings

from messaging_events.contract.jobs import parse_job
from messaging_events.models import InboundEvent
from tests.processes import (
    Processes,
    bullmq_counts,
    bullmq_job_state,
    celery_queue_depths,
    publish_jobs,
    wait_until,
)
from tests.reliability.stream import (
    EVENTS_PER_CONTACT,
    applied_count,
    assert_invariants,
    known_stream,
    report,
    restart_postgres,
    restart_redis,
    settle,
)

pytestmark = [pytest.mark.processes, pytest.mark.timeout(600)]

# Small batches keep several batches in flight, so a fault always lands mid-stream.
BRIDGE_ENV = {"BRIDGE_BATCH_SIZE": "10", "BRIDGE_CONCURRENCY": "20"}
WORKER_ENV = {"CELERY_VISIBILITY_TIMEOUT": "5"}


def _progress_after(prefix: str, baseline: int, timeout: float = 60.0) -> float:
    """Seconds until the stream makes progress again past `baseline` applied events."""
    started = time.monotonic()
    wait_until(lambda: applied_count(prefix) > baseline, timeout, message=f"progress past {baseline}")
    return time.monotonic() - started


def _mid_stream(prefix: str, stream_size: int) -> dict[str, int]:
    """Wait until the bridge is part-way through BullMQ, then say what is in flight on each side."""
    wait_until(lambda: bullmq_counts()["completed"] >= stream_size // 4, 60)
    counts = bullmq_counts()
    return {
        "bullmq_waiting": counts["waiting"],
        "bullmq_active": counts["active"],
        "celery_queued": sum(celery_queue_depths().values()),
        "applied": applied_count(prefix),
    }


def _active_job_ids() -> list[str]:
    client = redis.Redis.from_url(settings.BULLMQ_REDIS_URL, decode_responses=True)
    return client.lrange(f"{settings.BULLMQ_PREFIX}:{settings.BULLMQ_QUEUE}:active", 0, -1)


def test_bridge_killed_with_sigkill_mid_stream_several_times(processes: Processes) -> None:
    stream = known_stream("rk", 250)
    publish_jobs(stream.jobs)
    processes.start_worker(env=WORKER_ENV)
    # A batch larger than the concurrency waits out its linger: about 100 jobs/s, so every kill lands
    # mid-stream and the killed bridge always holds active jobs.
    env = {"BRIDGE_CONCURRENCY": "10", "BRIDGE_BATCH_SIZE": "50", "BRIDGE_LINGER_MS": "100"}
    bridge = processes.start_bridge(env=env)
    recoveries = []
    for round_ in range(3):
        # Mid-stream: this bridge holds active jobs while others still wait in BullMQ.
        wait_until(lambda: _active_job_ids() and bullmq_counts()["waiting"] > 0, 30, interval=0.01)
        bridge.kill()
        stranded = _active_job_ids()
        killed_at = time.monotonic()
        bridge = processes.start_bridge(f"heir-{round_}", env=env)
        # The dead bridge's locks expire and the stalled check hands its jobs to the heir.
        wait_until(lambda ids=stranded: {bullmq_job_state(i) for i in ids} == {"completed"}, 60)
        recoveries.append({"active_at_kill": len(stranded), "recovered_s": round(time.monotonic() - killed_at, 2)})
    settle()
    assert_invariants(stream)
    report("bridge kill -9 (x3)", events=stream.size, rounds=recoveries)


def _worker_children(worker_pid: int) -> list[psutil.Process]:
    return psutil.Process(worker_pid).children(recursive=True)


def _unacked() -> dict[str, list[str]]:
    """Celery messages delivered to a worker and not yet acknowledged: delivery tag → event keys."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        raw = client.hgetall("unacked")
    finally:
        client.close()
    stranded = {}
    for tag, value in raw.items():
        message, _exchange, _routing_key = json.loads(value)
        if message.get("headers", {}).get("task") != "messaging_events.apply_event_batch":
            continue  # e.g. unpark_contact_events, which carries contact ids
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        jobs = args[0] if args else kwargs["jobs"]
        stranded[tag.decode()] = [parse_job(job).idempotency_key for job in jobs]
    return stranded


def _newest_delivery_age() -> float:
    """Seconds since the most recent delivery of a still-unacknowledged message."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        newest = client.zrange("unacked_index", -1, -1, withscores=True)
    finally:
        client.close()
    return time.time() - newest[0][1] if newest else float("inf")


def _recorded(keys: list[str]) -> bool:
    """Every one of these events has an inbox row with its outcome."""
    rows = InboundEvent.objects.filter(idempotency_key__in=keys).exclude(status="received")
    return rows.count() == len(set(keys))


def _keys(messages: dict[str, list[str]]) -> list[str]:
    return [key for keys in messages.values() for key in keys]


def test_worker_child_and_main_process_killed_with_sigkill_mid_batch(processes: Processes) -> None:
    stream = known_stream("wk", 150)
    worker = processes.start_worker(env=WORKER_ENV)
    processes.start_bridge(env=BRIDGE_ENV)
    publish_jobs(stream.jobs)

    # 1. One prefork child dies mid-batch: the main process sees the loss and, with acks_late and
    # reject_on_worker_lost, rejects the message with requeue; another child runs it again.
    wait_until(lambda: applied_count("wk") >= 80 and len(_unacked()) >= 2, 60, interval=0.02)
    at_child_kill = _unacked()
    celery_queued = sum(v for k, v in celery_queue_depths().items() if k != "unacked")
    _worker_children(worker.pid)[0].kill()
    killed_at = time.monotonic()
    worker.wait_for_output("WorkerLostError", timeout=30)
    wait_until(lambda: _recorded(_keys(at_child_kill)), 60, interval=0.05, message="the lost batch to run again")
    child_recovery = time.monotonic() - killed_at
    assert worker.alive

    # 2. The worker's main process dies (SIGKILL, no warm shutdown): what it had taken stays in
    # kombu's `unacked` hash. A worker that starts once those messages are older than the
    # visibility timeout restores them to their queues (kombu's restore_visible at poll start).
    wait_until(lambda: applied_count("wk") >= 300 and len(_unacked()) >= 2, 90, interval=0.02)
    os.kill(worker.pid, signal.SIGKILL)  # the main process only: its pool children are orphaned
    worker.popen.wait(10)
    killed_at = time.monotonic()
    at_node_kill = _unacked()
    assert at_node_kill, "the killed worker held unacknowledged messages"
    in_flight_events = len(_keys(at_node_kill))
    # An orphaned child may still finish its batch; it can no longer acknowledge it.
    wait_until(lambda: _newest_delivery_age() > int(WORKER_ENV["CELERY_VISIBILITY_TIMEOUT"]) + 0.5, 30)
    processes.start_worker("worker-2", env=WORKER_ENV)
    wait_until(lambda: _recorded(_keys(at_node_kill)), 60, interval=0.05, message="the stranded batches to run again")
    node_recovery = time.monotonic() - killed_at

    settle(timeout=180)
    assert_invariants(stream)
    redelivered = InboundEvent.objects.filter(idempotency_key__in=_keys(at_child_kill) + _keys(at_node_kill))
    assert set(redelivered.values_list("status", flat=True)) == {"applied"}
    report(
        "worker kill -9",
        events=stream.size,
        celery_queued_at_child_kill=celery_queued,
        unacked_at_child_kill=len(at_child_kill),
        child_recovery_s=round(child_recovery, 2),
        unacked_messages_at_node_kill=len(at_node_kill),
        events_in_unacked_messages=in_flight_events,
        events_delivered_twice=redelivered.filter(deliveries__gte=2).count(),
        node_recovery_s=round(node_recovery, 2),
        visibility_timeout_s=int(WORKER_ENV["CELERY_VISIBILITY_TIMEOUT"]),
    )


def test_sigterm_with_work_in_flight_shuts_down_cleanly(processes: Processes) -> None:
    stream = known_stream("st", 250)
    publish_jobs(stream.jobs)
    worker = processes.start_worker(env=WORKER_ENV)
    bridge = processes.start_bridge(env=BRIDGE_ENV)
    in_flight = _mid_stream("st", stream.size)
    started = time.monotonic()
    assert bridge.stop(timeout=20, sig=signal.SIGTERM) == 0
    bridge_s = time.monotonic() - started
    assert bullmq_counts()["active"] == 0, "a clean bridge shutdown leaves no stalled job"
    started = time.monotonic()
    assert worker.stop(timeout=60, sig=signal.SIGTERM) == 0
    worker_s = time.monotonic() - started
    # Warm shutdown: running batches finished and were acknowledged, prefetched ones restored.
    assert celery_queue_depths()["unacked"] == 0, "a clean worker shutdown leaves nothing unacknowledged"

    processes.start_worker("worker-2", env=WORKER_ENV)
    processes.start_bridge("bridge-2", env=BRIDGE_ENV)
    settle()
    assert_invariants(stream)
    report(
        "SIGTERM",
        events=stream.size,
        bridge_active_at_term=in_flight,
        bridge_exit_s=round(bridge_s, 2),
        worker_exit_s=round(worker_s, 2),
    )


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def test_redis_restart_mid_stream_reconnects_without_restarts_or_spin(processes: Processes) -> None:
    stream = known_stream("rr", 250)
    publish_jobs(stream.jobs)
    worker = processes.start_worker(env=WORKER_ENV)
    bridge = processes.start_bridge(env=BRIDGE_ENV)
    in_flight = _mid_stream("rr", stream.size)

    watched = [psutil.Process(bridge.pid), psutil.Process(worker.pid), *_worker_children(worker.pid)]
    cpu_before, outage_started = _cpu_seconds(watched), time.monotonic()
    restart_redis(down_for_s=3.0)
    outage_s = time.monotonic() - outage_started
    cpu_during = _cpu_seconds(watched) - cpu_before
    # Four processes over the outage: a spinning one would burn about a core by itself.
    assert cpu_during < 0.5 * outage_s, f"{cpu_during:.2f}s of CPU in a {outage_s:.1f}s outage"

    baseline = applied_count("rr")
    recovery = _progress_after("rr", baseline, timeout=90) if baseline < stream.size else 0.0
    settle(timeout=180)
    assert bridge.alive and worker.alive, "the bridge and the worker reconnect by themselves"
    assert_invariants(stream)
    report(
        "Redis restart",
        events=stream.size,
        in_flight=in_flight,
        outage_s=round(outage_s, 1),
        cpu_during_outage_s=round(cpu_during, 2),
        recovery_after_restart_s=round(recovery, 2),
    )


def test_postgres_restart_mid_stream_retries_and_fails_nothing(processes: Processes) -> None:
    stream = known_stream("pr", 250)
    publish_jobs(stream.jobs)
    worker = processes.start_worker(env=WORKER_ENV)
    bridge = processes.start_bridge(env=BRIDGE_ENV)
    in_flight = _mid_stream("pr", stream.size)

    outage_started = time.monotonic()
    restart_postgres(down_for_s=2.0)
    outage_s = time.monotonic() - outage_started
    baseline = applied_count("pr")
    recovery = _progress_after("pr", baseline, timeout=120) if baseline < stream.size else 0.0
    settle(timeout=240)
    assert bridge.alive and worker.alive
    retries = worker.output().count("batch_retry")
    assert "event_transient_error" in worker.output() and retries, "the outage hit events in flight"
    assert not InboundEvent.objects.filter(status="failed").exists()
    assert_invariants(stream)
    report(
        "PostgreSQL restart",
        events=stream.size,
        in_flight=in_flight,
        outage_s=round(outage_s, 1),
        batch_retries=retries,
        recovery_after_restart_s=round(recovery, 2),
    )


def test_the_same_events_published_twice_as_new_jobs_have_one_effect(processes: Processes) -> None:
    stream = known_stream("dp", 100)
    processes.start_worker(env=WORKER_ENV)
    processes.start_bridge(env=BRIDGE_ENV)
    publish_jobs(stream.jobs)
    publish_jobs(stream.jobs)  # new BullMQ jobs, same events
    settle()
    assert_invariants(stream, deliveries=2)
    assert bullmq_counts()["completed"] == 2 * stream.size
    report("published twice", events=stream.size, jobs=2 * stream.size)


def test_a_poison_job_is_rejected_and_the_stream_goes_on(processes: Processes) -> None:
    stream = known_stream("pj", 50)
    poison = {"name": "contact.created", "data": {"payload": {"eventId": "poison-pj", "tenantId": ["nested", {}]}}}
    half = len(stream.jobs) // 2
    processes.start_worker(env=WORKER_ENV)
    processes.start_bridge(env=BRIDGE_ENV)
    publish_jobs([*stream.jobs[:half], poison, *stream.jobs[half:]])
    settle()
    rejected = InboundEvent.objects.get(idempotency_key="poison-pj")
    assert rejected.status == "rejected"
    assert "payload.tenantId" in rejected.error and "payload.contactId" in rejected.error
    assert_invariants(stream)
    assert stream.size == EVENTS_PER_CONTACT * 50
    report("poison job", events=stream.size, poison_reason=rejected.error[:200])
