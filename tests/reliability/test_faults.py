"""Kill the processes, restart the servers, publish twice: then count. Nothing lost, nothing doubled.

Each scenario publishes a known stream with the real Node BullMQ client and starts the real bridge,
Celery worker and beat. A fault scenario first waits until there is work in flight on the side it
hits, proves it (active BullMQ jobs, unacknowledged Celery messages, events hitting the outage), names
the events it hit, injects the fault, and after quiescence asserts that exactly those events were
delivered again (their `deliveries`), each ending `applied` with one effect (`assert_invariants`).
A fault that lands on an idle pipeline fails these tests.
"""

import re
import signal
import time
from collections.abc import Callable
from typing import TypeVar

import psutil
import pytest
import redis

from messaging_events.models import InboundEvent
from tests.processes import Processes, bullmq_counts, bullmq_job_state, celery_queue_depths, publish_jobs, wait_until
from tests.reliability.in_flight import (
    UnackedMessage,
    active_job_ids,
    blocked_client_ports,
    claims_held,
    deliveries,
    event_keys,
    job_event_keys,
    newest_delivery_age,
    process_on_port,
    received_task_ids,
    unacked_batches,
)
from tests.reliability.stream import (
    BEAT_ENV,
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
# About 100 jobs/s (batches of 10 wait out a 100 ms linger): BullMQ still holds waiting and active
# jobs while the worker keeps up, so a fault hits both sides.
SLOW_BRIDGE_ENV = {"BRIDGE_CONCURRENCY": "10", "BRIDGE_BATCH_SIZE": "50", "BRIDGE_LINGER_MS": "100"}
VISIBILITY_TIMEOUT_S = 5
T = TypeVar("T")
# A retried batch waits out its countdown inside the worker, unacknowledged; a countdown longer than the
# visibility timeout makes kombu restore the message and deliver the batch twice (legitimately: it then
# counts a second delivery). Production keeps the backoff cap (60 s) far below the timeout (600 s);
# the shortened timeout here needs a shortened cap too, or the PostgreSQL restart counts a second delivery.
RETRY_BACKOFF_MAX_S = 3
WORKER_ENV = {
    "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
    "EVENT_TASK_RETRY_BACKOFF_MAX_S": str(RETRY_BACKOFF_MAX_S),
    # Above the bridge's longest publish retry (10 s, system check messaging_events.E002), short enough
    # that a batch kombu loses when the whole worker is killed (celery/kombu#1836) comes back in the test.
    "INFLIGHT_GRACE_S": "12",
}


def _start_pipeline(processes: Processes, bridge_env: dict[str, str]):
    worker = processes.start_worker(env=WORKER_ENV, wait=False)
    processes.start_beat(env=BEAT_ENV, wait=False)
    bridge = processes.start_bridge(env=bridge_env, wait=False)
    processes.wait_ready()
    return worker, bridge


def _assert_deliveries(stream_keys: list[str], expected: dict[str, int]) -> dict[str, int]:
    """Every event's recorded deliveries equal what the test counted (1 unless the fault redelivered it)."""
    actual = deliveries(stream_keys)
    wrong = {key: (actual[key], expected.get(key, 1)) for key in stream_keys if actual[key] != expected.get(key, 1)}
    assert not wrong, f"(actual, expected) deliveries: {dict(list(wrong.items())[:10])}"
    return actual


def test_bridge_killed_with_sigkill_mid_stream_several_times(processes: Processes) -> None:
    # Each round lasts about the lock's expiry and the stalled check (6 to 7 s), while the heir drains about 95
    # jobs/s: 600 contacts (about 2,300 jobs) leave jobs waiting for the third kill. 250 did not on a fast host.
    stream = known_stream("rk", 600)
    publish_jobs(stream.jobs)
    _worker, bridge = _start_pipeline(processes, SLOW_BRIDGE_ENV)
    rounds, stranded_keys = [], set()
    for round_ in range(3):
        # Mid-stream: this bridge holds active jobs while others still wait in BullMQ.
        wait_until(lambda: active_job_ids() and bullmq_counts()["waiting"] > 0, 60, interval=0.01)
        bridge.kill()
        stranded = active_job_ids()  # nobody can move them now: the dead bridge's jobs
        killed_at = time.monotonic()
        assert stranded, "the killed bridge held active jobs"
        stranded_keys |= job_event_keys(stranded)
        bridge = processes.start_bridge(f"heir-{round_}", env=SLOW_BRIDGE_ENV)
        # The dead bridge's locks expire and the stalled check hands its jobs to the heir.
        wait_until(lambda ids=stranded: {bullmq_job_state(i) for i in ids} == {"completed"}, 90)
        rounds.append({"active_at_kill": len(stranded), "recovered_s": round(time.monotonic() - killed_at, 2)})
    settle()
    assert_invariants(stream)
    # A stranded job may have reached Celery before the kill (published, not yet completed in
    # BullMQ): then the heir publishes it again. Nothing else is ever delivered twice.
    actual = deliveries(stream.keys)
    assert {actual[key] for key in stranded_keys} <= {1, 2}
    twice = {key for key in stream.keys if actual[key] > 1}
    assert twice <= stranded_keys, f"delivered twice without being stranded: {sorted(twice - stranded_keys)[:5]}"
    report("bridge kill -9 (x3)", events=stream.size, rounds=rounds, stranded_delivered_twice=len(twice))


def _worker_children(worker_pid: int) -> list[psutil.Process]:
    return psutil.Process(worker_pid).children(recursive=True)


def _children_waiting_at_a_claim(worker, holder, count: int) -> list[psutil.Process]:
    """Once `count` of the worker's pool children wait at a batch's claim on `holder`'s rows, those children."""

    def waiting() -> set[int] | None:
        ports = blocked_client_ports(holder)
        return ports if len(ports) >= count else None

    ports = wait_until(waiting, 60, interval=0.02, message=f"{count} batches waiting on the held claims")
    return [process_on_port(_worker_children(worker.pid), port) for port in ports]


def _batch_carrying(key: str) -> UnackedMessage:
    return next(batch for batch in unacked_batches().values() if key in batch.keys)


# The message.sent of contact 60 of the first stream, and those of contacts 25 and 100 of the second: held
# (uncommitted inbox rows), they stop their batches at the claim, so each kill lands inside a running batch.
# The Redis restart test holds the same event of its stream, so that its outage lands inside a batch too.
LOST_AT, STRANDED_AT = 4 * 60 + 1, (4 * 25 + 1, 4 * 100 + 1)


def test_worker_child_and_main_process_killed_with_sigkill_mid_batch(processes: Processes) -> None:
    first, second = known_stream("wk", 150), known_stream("wl", 150, phones_from=150)
    expected = dict.fromkeys(first.keys + second.keys, 1)
    worker, _bridge = _start_pipeline(processes, BRIDGE_ENV)

    # 1. One prefork child dies mid-batch: the main process sees the loss and, with acks_late and
    # reject_on_worker_lost, rejects the message with requeue; the batch runs again on a new child.
    with claims_held([first.jobs[LOST_AT]]) as holder:
        publish_jobs(first.jobs)
        [child] = _children_waiting_at_a_claim(worker, holder, 1)
        lost = _batch_carrying(first.keys[LOST_AT])
        lost_before = worker.output().count("WorkerLostError")
        killed_at = time.monotonic()
        child.kill()
        psutil.wait_procs([child], timeout=10)
        # One transaction per batch, stopped at its first statement: nothing of it was recorded.
        assert not any(deliveries(lost.keys).values())
        wait_until(lambda: worker.output().count("WorkerLostError") > lost_before, 30, interval=0.05)
    wait_until(lambda: received_task_ids(worker.output()).count(lost.task_id) >= 2, 60, message="the requeued batch")
    wait_until(lambda: all(deliveries(lost.keys).values()), 90, interval=0.05, message="the lost batch to run again")
    child_recovery = time.monotonic() - killed_at
    assert worker.alive
    # The requeue brought it back, not the reconciliation's safety net (which would, 12 s later).
    assert "inflight_republished" not in worker.output()
    settle()
    assert_invariants(first, deliveries=1)  # the lost batch ran again: its one delivery is the requeued one

    # 2. The whole worker dies (main process and children, as on an OOM kill or a crash) while both children
    # run a batch: what it held stays in kombu's `unacked` hash. A worker that starts once those messages are
    # older than the visibility timeout restores them to their queues (kombu's restore_visible at poll init).
    with claims_held([second.jobs[i] for i in STRANDED_AT]) as holder:
        publish_jobs(second.jobs)
        _children_waiting_at_a_claim(worker, holder, 2)
        children = _worker_children(worker.pid)
        worker.kill()
        psutil.wait_procs(children, timeout=10)
        killed_at = time.monotonic()
        stranded = unacked_batches()
        stranded_keys = event_keys(stranded)
        at_kill = deliveries(stranded_keys)
    assert {second.keys[i] for i in STRANDED_AT} <= stranded_keys, "the running batches stayed unacknowledged"
    for key, n in at_kill.items():
        expected[key] = n + 1  # each event of a stranded batch is delivered exactly once more
    wait_until(lambda: newest_delivery_age() > VISIBILITY_TIMEOUT_S + 0.5, 30)
    heir = processes.start_worker("worker-2", env=WORKER_ENV)
    wait_until(
        lambda: deliveries(stranded_keys) == {k: expected[k] for k in stranded_keys},
        90,
        interval=0.05,
        message="the stranded batches to run again",
    )
    node_recovery = time.monotonic() - killed_at
    # kombu's restore brought them back, not the reconciliation's safety net.
    assert "inflight_republished" not in heir.output()

    settle()
    assert_invariants(first)
    assert_invariants(second)
    actual = _assert_deliveries(first.keys + second.keys, expected)
    report(
        "worker kill -9",
        events=first.size + second.size,
        lost_batch_events=len(lost.keys),
        child_recovery_s=round(child_recovery, 2),
        unacked_batches_at_node_kill=len(stranded),
        events_in_unacked_batches=len(stranded_keys),
        events_delivered_twice=sum(1 for n in actual.values() if n > 1),
        node_recovery_s=round(node_recovery, 2),
        visibility_timeout_s=VISIBILITY_TIMEOUT_S,
    )


def test_sigterm_with_work_in_flight_shuts_down_cleanly(processes: Processes) -> None:
    stream = known_stream("st", 250)
    publish_jobs(stream.jobs)
    # 1. The bridge. The slow bridge takes about 10 s over the stream: for seconds it holds active jobs, with
    #    more waiting in BullMQ and a backlog already in Celery.
    bridge = processes.start_bridge(env=SLOW_BRIDGE_ENV)
    wait_until(
        lambda: sum(celery_queue_depths().values()) >= 10 and bullmq_counts()["waiting"] > 0 and active_job_ids(),
        60,
        interval=0.01,
        message=lambda: f"{bullmq_counts()} {celery_queue_depths()}",
    )
    active_at_term = bullmq_counts()["active"]
    assert active_at_term, "the bridge held active jobs at SIGTERM"
    started = time.monotonic()
    assert bridge.stop(timeout=30, sig=signal.SIGTERM) == 0
    bridge_s = time.monotonic() - started
    assert bullmq_counts()["active"] == 0, "a clean bridge shutdown leaves no stalled job"

    # 2. The worker. Every event's inbox row is held open, so both pool children wait at the claim of their
    #    first batch: the SIGTERM finds two batches running, and none being handed to a child. (A batch handed
    #    over just as a warm shutdown begins can be left unacknowledged and delivered twice, a Celery prefork
    #    race the inbox makes harmless; docs/reliability.md.) The worker may hold more batches than its two
    #    children run (seen once under load, at start-up): it must hand those back unrun.
    with claims_held(stream.jobs) as holder:
        worker = processes.start_worker(env=WORKER_ENV, wait=False)
        processes.start_beat(env=BEAT_ENV, wait=False)
        processes.wait_ready()
        _children_waiting_at_a_claim(worker, holder, 2)
        held = unacked_batches()
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait_for_output("Warm shutdown", 30)
    # The holds end inside the shutdown: the two running batches finish, are acknowledged, and the worker exits.
    worker.popen.wait(60)
    worker_s = time.monotonic() - started
    assert worker.stop() == 0
    assert celery_queue_depths()["unacked"] == 0, "a clean worker shutdown leaves nothing unacknowledged"
    applied = set(
        InboundEvent.objects.filter(idempotency_key__startswith="st-", status="applied").values_list(
            "idempotency_key", flat=True
        )
    )
    ran = {task_id: batch for task_id, batch in held.items() if set(batch.keys) <= applied}
    assert len(ran) == 2 and event_keys(ran) == applied, "exactly the two running batches were applied"

    processes.start_worker("worker-2", env=WORKER_ENV, wait=False)
    processes.start_bridge("bridge-2", env=BRIDGE_ENV, wait=False)
    processes.wait_ready()
    settle()
    # Neither shutdown redelivered anything: every event was delivered exactly once.
    assert_invariants(stream, deliveries=1)
    report(
        "SIGTERM",
        events=stream.size,
        bullmq_active_at_bridge_term=active_at_term,
        unacked_batches_at_worker_term=len(held),
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


def _once_loaded(read: Callable[[], T]) -> T:
    """`read()` as soon as the restarted Redis has loaded its append-only file."""

    def attempt() -> tuple[T] | None:
        try:
            return (read(),)
        except redis.exceptions.BusyLoadingError:
            return None

    return wait_until(attempt, 30, interval=0.02)[0]


def test_redis_restart_mid_stream_reconnects_without_restarts_or_spin(processes: Processes) -> None:
    stream = known_stream("rr", 250)
    # The batch carrying one held event waits at its claim through the outage: the worker holds an
    # unacknowledged batch when Redis goes down, however fast the other batches run (they did, once).
    with claims_held([stream.jobs[LOST_AT]]) as holder:
        publish_jobs(stream.jobs)
        worker, bridge = _start_pipeline(processes, SLOW_BRIDGE_ENV)
        wait_until(lambda: applied_count("rr") >= 20 and active_job_ids(), 90, interval=0.01)
        _children_waiting_at_a_claim(worker, holder, 1)
        active_before, unacked_before = active_job_ids(), unacked_batches()

        watched = [psutil.Process(bridge.pid), psutil.Process(worker.pid), *_worker_children(worker.pid)]
        cpu_before, outage_started = _cpu_seconds(watched), time.monotonic()
        # Down for longer than the visibility timeout: a reconnecting worker restores the batches it
        # held at once (kombu's restore at poll init) instead of at its sweep ~100 s later.
        restart_redis(down_for_s=VISIBILITY_TIMEOUT_S + 2.0)
        outage_s = time.monotonic() - outage_started
        # Read at once (with what was read just before): the worker needs 2 s or more to reconnect.
        unacked_at_fault = {**unacked_before, **_once_loaded(unacked_batches)}
        active_at_fault = set(active_before) | set(_once_loaded(active_job_ids))
        cpu_during = _cpu_seconds(watched) - cpu_before
    assert stream.keys[LOST_AT] in event_keys(unacked_at_fault), "the held batch was unacknowledged at the fault"
    assert unacked_at_fault, "the worker held unacknowledged batches when Redis went down"
    assert active_at_fault, "the bridge held active jobs when Redis went down"
    # Four processes over the outage: a spinning one would burn about a core by itself.
    assert cpu_during < 0.5 * outage_s, f"{cpu_during:.2f}s of CPU in a {outage_s:.1f}s outage"

    in_flight = event_keys(unacked_at_fault) | job_event_keys(sorted(active_at_fault))
    baseline = applied_count("rr")
    assert baseline < stream.size, "the fault landed before the end of the stream"
    recovery_started = time.monotonic()
    wait_until(lambda: applied_count("rr") > baseline, 120, message=f"progress past {baseline}")
    recovery = time.monotonic() - recovery_started
    settle()
    assert bridge.alive and worker.alive, "the bridge and the worker reconnect by themselves"
    assert_invariants(stream)
    # Held batches come back after the visibility timeout and expired BullMQ locks send jobs round
    # again: only those events may have been delivered twice.
    actual = deliveries(stream.keys)
    twice = {key for key in stream.keys if actual[key] > 1}
    assert twice <= in_flight, f"delivered twice but not in flight: {sorted(twice - in_flight)[:5]}"
    assert max(actual.values()) <= 3
    report(
        "Redis restart",
        events=stream.size,
        unacked_batches_at_fault=len(unacked_at_fault),
        bullmq_active_at_fault=len(active_at_fault),
        events_in_flight=len(in_flight),
        events_delivered_twice=len(twice),
        outage_s=round(outage_s, 1),
        cpu_during_outage_s=round(cpu_during, 2),
        recovery_after_restart_s=round(recovery, 2),
    )


def test_postgres_restart_mid_stream_retries_and_fails_nothing(processes: Processes) -> None:
    stream = known_stream("pr", 250)
    publish_jobs(stream.jobs)
    worker, bridge = _start_pipeline(processes, SLOW_BRIDGE_ENV)
    wait_until(lambda: applied_count("pr") >= 20 and unacked_batches(), 90, interval=0.01)
    unacked_at_fault = len(unacked_batches())

    outage_started = time.monotonic()
    restart_postgres(down_for_s=2.0)
    outage_s = time.monotonic() - outage_started
    baseline = applied_count("pr")
    assert baseline < stream.size, "the fault landed before the end of the stream"
    settle(timeout=240)
    assert bridge.alive and worker.alive
    log = worker.output()
    # The events that hit the outage rolled back and were retried: name them, then check them.
    hit_jobs = set(re.findall(r"event_transient_error job=(\S+)", log))
    retries = log.count("batch_retry")
    assert hit_jobs and retries, "the outage hit events in flight, and their batches were retried"
    assert not InboundEvent.objects.filter(status="failed").exists()
    assert_invariants(stream, deliveries=1)  # a rolled-back claim is not a delivery
    hit = InboundEvent.objects.filter(idempotency_key__startswith="pr-", bullmq_job_id__in=hit_jobs)
    assert hit.count() == len(hit_jobs) and set(hit.values_list("status", flat=True)) == {"applied"}
    report(
        "PostgreSQL restart",
        events=stream.size,
        unacked_batches_at_fault=unacked_at_fault,
        events_hit_by_the_outage=len(hit_jobs),
        batch_retries=retries,
        outage_s=round(outage_s, 1),
    )


def test_the_same_events_published_twice_as_new_jobs_have_one_effect(processes: Processes) -> None:
    stream = known_stream("dp", 100)
    _start_pipeline(processes, BRIDGE_ENV)
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
    _start_pipeline(processes, BRIDGE_ENV)
    publish_jobs([*stream.jobs[:half], poison, *stream.jobs[half:]])
    settle()
    rejected = InboundEvent.objects.get(idempotency_key="poison-pj")
    assert rejected.status == "rejected"
    assert "payload.tenantId" in rejected.error and "payload.contactId" in rejected.error
    assert_invariants(stream)
    assert stream.size == EVENTS_PER_CONTACT * 50
    report("poison job", events=stream.size, poison_reason=rejected.error[:200])
