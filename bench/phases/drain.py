"""Phases 1 and 2: N pre-loaded BullMQ jobs drained by the Node no-op worker, then by the bridge."""

import json
from pathlib import Path

from bench.config import NODE_DIR, log
from bench.context import Bench
from harness.process import ManagedProcess
from harness.procfile import bridge_command
from messaging_events import broker


def node_noop(bench: Bench, jobs_path: Path, n: int) -> None:
    """The real Node BullMQ Worker (no-op, concurrency 32): the ceiling a BullMQ consumer reaches here."""
    record = bench.phase("node_noop")
    bench.flush_redis()
    bench.publish(jobs_path)
    argv = bench.node_args(str(NODE_DIR / "noop_worker.mjs"), "--concurrency", "32", "--expect", str(n))
    # Not one of the pipeline's processes: its memory is not sampled.
    proc = ManagedProcess("node-noop", argv, bench.env, bench.work / "node-noop.log", pid_file=bench.pid_file)
    try:
        started, ended = bench.wait_bullmq_drained(n, 300)
        proc.popen.wait(60)
    finally:
        proc.stop(whole_group=True)
    # Its last line of JSON: {completed, seconds} by the worker's own clock.
    own = json.loads([line for line in proc.output().splitlines() if line.startswith("{")][-1])
    record.update(seconds=ended - started, own_seconds=own.get("seconds"), jobs=n)
    bench.results["node_noop_drain_jobs_per_s"] = round(n / (ended - started))
    log.info("  node no-op: %d jobs/s", bench.results["node_noop_drain_jobs_per_s"])


def bridge_drain(bench: Bench, jobs_path: Path, n: int) -> None:
    """The bridge, at its defaults, drains the same N jobs into Celery, no workers running; then two
    bridges at once (issue 10 §3: whether `make up` should run two on 2 cores)."""
    for bridges, key in ((1, "bridge_drain_jobs_per_s"), (2, "bridge_drain_two_bridges_jobs_per_s")):
        record = bench.phase("bridge_drain" if bridges == 1 else "bridge_drain_two_bridges")
        bench.flush_redis()
        bench.publish(jobs_path)
        procs = [bench.start(f"bridge-drain-{i}", bridge_command()) for i in range(bridges)]
        try:
            started, ended = bench.wait_bullmq_drained(n, 600)
        finally:
            for proc in procs:
                bench.stop(proc)
        messages = sum(broker.queue_depths(bench.broker).values())
        record.update(seconds=ended - started, jobs=n, celery_messages=messages, bridges=bridges)
        rate = n / (ended - started)
        bench.results[key] = round(rate)
        log.info("  %d bridge(s): %d jobs/s into %d Celery messages", bridges, rate, messages)
        bench.flush_redis()
