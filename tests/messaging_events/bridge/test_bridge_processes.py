"""The real bridge (`manage.py run_bridge`) against real Redis: completion only after publish,
broker outage and recovery, graceful shutdown, kill -9, two bridges at once, per-event tasks."""

import os
import re
import signal
import time
from collections import Counter

import pytest

from messaging_events.models import InboundEvent
from tests.messaging_events.samples import contact_job
from tests.processes import (
    Processes,
    TcpProxy,
    bullmq_counts,
    bullmq_job_state,
    celery_messages,
    celery_queue_depths,
    inbox_counts,
    publish_jobs,
    wait_for_quiescence,
    wait_until,
)

pytestmark = pytest.mark.processes


def deleted_jobs(n: int, prefix: str = "del") -> list[dict]:
    """contact.deleted events: valid, routed to `normal`, and recorded as ignored by any CRM."""
    return [
        contact_job("contact.deleted", {"eventId": f"{prefix}-{i}", "tenantId": "t-bridge", "contactId": f"c-{i}"})
        for i in range(n)
    ]


def bridged_events(queue: str = "normal") -> list[dict]:
    return [job for message in celery_messages(queue) for job in message["args"][0]]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def test_jobs_complete_only_after_publish_and_survive_a_broker_outage(
    processes: Processes, broker_proxy: TcpProxy
) -> None:
    broker_proxy.down()
    bridge = processes.start_bridge(env={"CELERY_BROKER_URL": broker_proxy.url})
    ids = publish_jobs(deleted_jobs(30), ids=True)

    wait_until(lambda: bullmq_counts()["active"] == 30, 10, message=lambda: f"30 active: {bullmq_counts()}")
    wait_until(lambda: "broker_publish_failed" in bridge.output(), 10, message="a logged publish failure")
    cpu_before = cpu_seconds(bridge.pid)
    # Longer than the lock (5 s) and two stalled checks (2 s): the Worker renews the locks, and
    # nothing is completed, failed, or handed back to `wait` while the broker is unreachable.
    time.sleep(7)
    cpu_used = cpu_seconds(bridge.pid) - cpu_before
    counts = bullmq_counts()
    assert counts == {"waiting": 0, "active": 30, "delayed": 0, "completed": 0, "failed": 0}, counts
    assert {bullmq_job_state(i) for i in ids} == {"active"}
    assert celery_queue_depths()["normal"] == 0
    assert bridge.alive
    assert cpu_used < 2.0, f"the bridge spun while the broker was down: {cpu_used:.2f}s CPU in 7s"
    assert "retry_in_s=" in bridge.output()

    broker_proxy.up()  # the broker returns: the bridge resumes by itself
    wait_until(lambda: bullmq_counts()["completed"] == 30, 20, message=lambda: f"30 completed: {bullmq_counts()}")
    assert bullmq_counts()["active"] == 0
    events = bridged_events("normal")
    assert sorted(e["id"] for e in events) == sorted(ids)  # each job in the broker exactly once
    assert "broker_publish_recovered" in bridge.output()
    assert bridge.stop() == 0


def test_connection_cut_mid_stream_loses_nothing(processes: Processes, broker_proxy: TcpProxy) -> None:
    bridge = processes.start_bridge(env={"CELERY_BROKER_URL": broker_proxy.url, "BRIDGE_BATCH_SIZE": "10"})
    publish_jobs(deleted_jobs(20, "before"))
    wait_until(lambda: bullmq_counts()["completed"] == 20, 15)
    broker_proxy.down()  # established connections are cut, new ones refused
    ids = publish_jobs(deleted_jobs(40, "during"), ids=True)
    wait_until(lambda: bullmq_counts()["active"] == 40, 10, message=lambda: str(bullmq_counts()))
    time.sleep(1)
    assert bullmq_counts()["completed"] == 20
    broker_proxy.up()
    wait_until(lambda: bullmq_counts()["completed"] == 60, 20, message=lambda: str(bullmq_counts()))
    during = [e["id"] for e in bridged_events("normal") if e["data"]["payload"]["eventId"].startswith("during")]
    assert sorted(during) == sorted(ids)
    assert bridge.stop() == 0


def test_sigterm_flushes_in_flight_batches_and_exits_0(processes: Processes) -> None:
    # A long linger keeps jobs in the batchers: SIGTERM must publish and complete them, not wait it out.
    bridge = processes.start_bridge(
        env={"BRIDGE_LINGER_MS": "60000", "BRIDGE_BATCH_SIZE": "1000", "BRIDGE_CONCURRENCY": "100"}
    )
    publish_jobs(deleted_jobs(250))
    wait_until(lambda: bullmq_counts()["active"] == 100, 10, message=lambda: str(bullmq_counts()))
    time.sleep(0.5)
    assert bullmq_counts()["completed"] == 0
    started = time.monotonic()
    bridge.send_signal(signal.SIGTERM)
    bridge.popen.wait(15)
    assert bridge.returncode == 0, bridge.tail()
    assert time.monotonic() - started < 10
    counts = bullmq_counts()
    # Nothing left active; what was taken is completed and in Celery; the rest still waits for a bridge.
    assert counts["active"] == 0, counts
    assert counts["failed"] == 0
    assert counts["completed"] >= 100
    assert counts["completed"] + counts["waiting"] == 250, counts
    events = bridged_events("normal")
    assert len(events) == counts["completed"]
    assert len({e["id"] for e in events}) == len(events)
    assert "bridge_stopped" in bridge.output()

    # The next bridge takes the rest.
    processes.start_bridge("bridge-next")
    wait_until(lambda: bullmq_counts()["completed"] == 250, 20, message=lambda: str(bullmq_counts()))
    assert len({e["id"] for e in bridged_events("normal")}) == 250


def test_sigint_also_stops_cleanly(processes: Processes) -> None:
    bridge = processes.start_bridge()
    publish_jobs(deleted_jobs(20))
    wait_until(lambda: bullmq_counts()["completed"] == 20, 10)
    assert bridge.stop(timeout=10, sig=signal.SIGINT) == 0


def test_a_bridge_killed_with_sigkill_loses_nothing(processes: Processes) -> None:
    victim = processes.start_bridge("victim", env={"BRIDGE_LINGER_MS": "60000", "BRIDGE_BATCH_SIZE": "1000"})
    ids = publish_jobs(deleted_jobs(50, "kill"), ids=True)
    wait_until(lambda: bullmq_counts()["active"] == 50, 10, message=lambda: str(bullmq_counts()))
    victim.kill()
    assert bullmq_counts()["active"] == 50  # held by a dead bridge
    processes.start_bridge("heir", wait=False)
    processes.start_worker(concurrency=2, wait=False)
    processes.wait_ready()
    # Its locks expire (5 s) and the stalled check (every 2 s) hands the jobs to the heir.
    wait_for_quiescence(timeout=40, min_inbox_rows=50)
    assert bullmq_counts()["completed"] == 50
    assert {bullmq_job_state(i) for i in ids} == {"completed"}
    assert inbox_counts() == {"ignored": 50}


def test_two_bridges_at_once_give_each_event_one_inbox_row(processes: Processes) -> None:
    processes.start_bridge("bridge-a", env={"BRIDGE_BATCH_SIZE": "20", "BRIDGE_CONCURRENCY": "20"}, wait=False)
    processes.start_bridge("bridge-b", env={"BRIDGE_BATCH_SIZE": "20", "BRIDGE_CONCURRENCY": "20"}, wait=False)
    processes.start_worker(concurrency=4, wait=False)
    processes.wait_ready()
    jobs = deleted_jobs(600, "two")
    duplicates = jobs[:50]  # the producer republishes some events: same eventId, new BullMQ jobs
    publish_jobs(jobs + duplicates + [{"name": "bogus.event", "data": {"payload": {"n": 1}}}])
    wait_for_quiescence(timeout=60, min_inbox_rows=601)

    assert bullmq_counts()["completed"] == 651
    assert inbox_counts() == {"ignored": 600, "rejected": 1}
    deliveries = Counter(InboundEvent.objects.filter(status="ignored").values_list("deliveries", flat=True))
    assert deliveries == {1: 550, 2: 50}
    # Both bridges took part: each published a share (its final count, logged as it stops), and the
    # shares add up to every job once.
    bridges = [p for p in processes.started if p.name.startswith("bridge")]
    assert all(bridge.stop() == 0 for bridge in bridges)
    shares = [int(re.findall(r"bridge_stopped published=(\d+)", bridge.output())[-1]) for bridge in bridges]
    assert min(shares) > 0 and sum(shares) == 651, shares


def test_batch_size_one_sends_one_task_per_event(processes: Processes) -> None:
    bridge = processes.start_bridge(env={"BRIDGE_BATCH_SIZE": "1"})
    publish_jobs(deleted_jobs(12, "one"))
    wait_until(lambda: bullmq_counts()["completed"] == 12, 10)
    messages = celery_messages("normal")
    assert len(messages) == 12
    assert all(m["task"] == "messaging_events.apply_event_batch" and len(m["args"][0]) == 1 for m in messages)
    processes.start_worker(concurrency=2)
    wait_for_quiescence(timeout=30, min_inbox_rows=12)
    assert inbox_counts() == {"ignored": 12}
    assert bridge.stop() == 0


def test_sigterm_mid_stream_leaves_nothing_active(processes: Processes) -> None:
    # Jobs flowing at full speed: at SIGTERM the Worker has fetches in flight as well as batches.
    bridge = processes.start_bridge(env={"BRIDGE_BATCH_SIZE": "25", "BRIDGE_CONCURRENCY": "50"})
    publish_jobs(deleted_jobs(4000, "stream"))
    wait_until(lambda: bullmq_counts()["completed"] >= 300, 20)
    assert bridge.stop(timeout=15) == 0, bridge.tail()
    counts = bullmq_counts()
    assert counts["active"] == 0, counts
    assert counts["completed"] + counts["waiting"] == 4000, counts
    assert len({e["id"] for e in bridged_events("normal")}) == counts["completed"]
