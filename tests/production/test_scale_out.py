"""Scale-out on one machine: two worker nodes and two bridges against one Redis and one PostgreSQL.

Each process is what a separate host would run (`-n a@%h`, `-n b@%h`, each `-Q high,normal,low`); they
share nothing but the servers. The stream is published with the Node BullMQ client.

`SCALE_OUT_MEASURE=1` also runs the rough one-node versus two-node drain measurement quoted in
docs/deployment.md.
"""

import os
import re
import sys
import time

import pytest

from messaging_events.models import InboundEvent
from tests.messaging_events.samples import contact_job, contact_payloads, message_job, message_payloads
from tests.processes import (
    ManagedProcess,
    Processes,
    bullmq_counts,
    celery_queue_depths,
    publish_jobs,
    wait_for_quiescence,
    wait_until,
    worker_command,
)
from tests.reliability.in_flight import blocked_client_ports, claims_held
from tests.reliability.stream import assert_invariants, known_stream, settle

pytestmark = [pytest.mark.processes, pytest.mark.timeout(600)]

BRIDGE_ENV = {"BRIDGE_BATCH_SIZE": "10", "BRIDGE_CONCURRENCY": "20"}


def start_node(processes: Processes, node: str, concurrency: int = 1) -> ManagedProcess:
    """A worker node named `node@host`; not waited for (`processes.wait_ready()`)."""
    return processes.start(
        f"worker-{node}", worker_command(concurrency=concurrency, hostname=f"{node}@%h"), ready_marker=" ready."
    )


def tasks_run(worker: ManagedProcess) -> int:
    return len(re.findall(r"Task messaging_events\.apply_event_batch\[[^\]]+\] succeeded", worker.output()))


def published_by(bridge: ManagedProcess) -> int:
    found = re.findall(r"bridge_stopped published=(\d+)", bridge.output())
    assert found, bridge.tail()
    return int(found[-1])


def test_two_nodes_and_two_bridges_apply_each_event_once_and_keep_priority(processes: Processes) -> None:
    bridges = [processes.start_bridge(f"bridge-{n}", env=BRIDGE_ENV, wait=False) for n in ("a", "b")]
    workers = [start_node(processes, node) for node in ("a", "b")]
    processes.wait_ready()
    assert all(f"{node}@" in w.output() for node, w in zip("ab", workers, strict=True))

    # 1. A stream of 600 events through both bridges and both nodes: one effect per event.
    stream = known_stream("so", contacts=150)
    publish_jobs(stream.jobs)
    settle(timeout=240)
    assert_invariants(stream)
    assert all(tasks_run(w) > 0 for w in workers), [tasks_run(w) for w in workers]  # both nodes worked

    # 2. Strict priority still holds with two consumers: a high event published behind a low backlog
    #    is applied ahead of most of that backlog. The backlog's inbox rows are held open, so each node's
    #    child waits at the claim of its first backlog batch while the rest of the backlog fills Celery's
    #    `low` queue: the high event meets a waiting backlog however fast the nodes drain it.
    contact, backlog = "so-c0", 800
    opens = [
        message_job("email.opened", message_payloads(contact=contact, message=f"so-bl-{i}")["email.opened"], contact)
        for i in range(backlog)
    ]
    payloads = contact_payloads(tenant="t-reliability", contact=contact, prefix="so-high")
    preference = {**payloads["contactPreference.updated"], "emailOptIn": False}
    with claims_held(opens) as holder:
        publish_jobs(opens)
        wait_until(
            lambda: bullmq_counts()["completed"] >= stream.size + backlog and len(blocked_client_ports(holder)) == 2,
            60,
            message=lambda: f"{bullmq_counts()} blocked={blocked_client_ports(holder)}",
        )
        # Batches of at most 10 events: at least 80 messages, one held by each node.
        assert celery_queue_depths()["low"] >= backlog // 10 - 2, "the backlog waits in Celery behind the two nodes"
        publish_jobs([contact_job("contactPreference.updated", preference)])
        wait_until(lambda: celery_queue_depths()["high"] == 1, 30, message=lambda: str(celery_queue_depths()))
    wait_for_quiescence(timeout=240, min_inbox_rows=stream.size + backlog + 1)

    high = InboundEvent.objects.get(idempotency_key="so-high_125")
    assert high.status == "applied", high.error
    lows = InboundEvent.objects.filter(event_type="email.opened", messaging_contact_id=contact).exclude(
        idempotency_key__startswith="so-"
    )
    assert lows.count() == backlog and set(lows.values_list("status", flat=True)) == {"applied"}
    after_high = lows.filter(applied_at__gt=high.applied_at).count()
    assert after_high >= backlog // 4, f"only {after_high} low events were applied after the high one"

    for bridge in bridges:
        assert bridge.stop() == 0
    published = [published_by(b) for b in bridges]
    assert sum(published) >= stream.size + backlog + 1, published  # a redelivered job may count twice
    assert all(p > 0 for p in published), published  # both bridges shared the queue
    assert bullmq_counts()["completed"] >= stream.size + backlog + 1


@pytest.mark.skipif(not os.environ.get("SCALE_OUT_MEASURE"), reason="measurement: set SCALE_OUT_MEASURE=1")
@pytest.mark.parametrize("nodes", [1, 2])
def test_measure_drain_rate_with_one_and_two_nodes(processes: Processes, nodes: int) -> None:
    """Pre-fill Celery with a stream (bridge only), then time N nodes (one pool child each) draining it."""
    stream = known_stream(f"m{nodes}", contacts=int(os.environ.get("SCALE_OUT_CONTACTS", "500")))
    bridge = processes.start_bridge(env={"BRIDGE_BATCH_SIZE": "32"})
    publish_jobs(stream.jobs)
    wait_until(lambda: bullmq_counts()["completed"] == stream.size, 120, message=lambda: str(bullmq_counts()))
    bridge.stop()
    started = time.monotonic()
    for node in "ab"[:nodes]:
        start_node(processes, node)
    processes.wait_ready()
    settle(timeout=540)
    seconds = time.monotonic() - started
    assert_invariants(stream)
    load = os.getloadavg()[0]
    sys.stderr.write(
        f"\nSCALE_OUT nodes={nodes} events={stream.size} seconds={seconds:.1f} "
        f"events_per_s={stream.size / seconds:.0f} load1={load:.1f}\n"
    )
