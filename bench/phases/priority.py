"""Phase 8: a flood of low events sits in Celery `low`; high events are published during its drain.

The figure is the latency of the high events (`contactPreference.updated`), from their job's timestamp
to their application, while the backlog of low events is still being applied: the workers' strict
queue order (`-Q high,normal,low`) must let them pass the backlog.
"""

import json
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import db
from bench.config import NODE_DIR, SIZES, SPREAD_MAX_S, log
from bench.context import Bench
from messaging_events import broker

HIGH_TYPE = "contactPreference.updated"


@dataclass(frozen=True)
class Backlog:
    remaining: int  # flood events not yet final
    low_messages: int  # Celery messages waiting in `low`
    rate: float  # events/s the workers apply it at
    spread_s: float  # how long the high events are spread over: most of what remains of the drain


def run(bench: Bench, contacts: list, tag: str) -> None:
    from bench import stream

    record = bench.phase("priority")
    flood_n, high_n = SIZES["flood"], SIZES["high"]
    flood_path = bench.work / "flood.jsonl"
    stream.write_jsonl(stream.low_flood(contacts, flood_n, tag), str(flood_path))
    highs = list(stream.preference_changes(contacts, high_n, tag))
    bench.flush_redis()
    base = db.inbox_max_id()
    workers = bench.start_workers("worker-priority")
    bridge = bench.start_bridge("bridge-priority")
    try:
        flood_absorb_s = absorb_flood(bench, flood_path, flood_n)
        backlog = measure_backlog(bench, base, flood_n)
        log.info(
            "  flood absorbed in %.1fs; backlog %d events (%d low messages), draining at %.0f/s; "
            "publishing %d high events over %.1fs",
            flood_absorb_s,
            backlog.remaining,
            backlog.low_messages,
            backlog.rate,
            high_n,
            backlog.spread_s,
        )
        publish_spread(bench, highs, backlog.spread_s)
        high_done = db.wait_applied(base, high_n, 120, f"AND event_type = '{HIGH_TYPE}'")
        flood_done = {"statuses": db.inbox_statuses(base, f"AND event_type <> '{HIGH_TYPE}'")}
    finally:
        bench.stop(bridge)
        for proc in workers:
            bench.stop(proc)
    latencies = high_latencies_ms(base)
    record.update(high_latency_split_p50_ms(base))
    record.update(high_bridge_p50_ms(bench, flood_n, high_n))
    during = applied_during_backlog(base, flood_done["statuses"], flood_n)
    bench.results["high_priority_p50_ms"] = percentile(latencies, 50)
    bench.results["high_priority_p99_ms"] = percentile(latencies, 99)
    bench.results["flood_absorb_s"] = round(flood_absorb_s, 2)
    record.update(
        flood=flood_n,
        high=high_n,
        high_applied=len(latencies),
        high_applied_during_backlog=during,
        high_max_ms=round(latencies[-1], 1) if latencies else None,
        high_mean_ms=round(statistics.fmean(latencies), 1) if latencies else None,
        backlog_at_high_start=backlog.remaining,
        backlog_low_messages=backlog.low_messages,
        backlog_drain_events_per_s=backlog.rate,
        spread_s=round(backlog.spread_s, 1),
        high_statuses=high_done["statuses"],
        flood_statuses=flood_done["statuses"],
    )
    log.info(
        "  high priority: p50 %s ms, p99 %s ms, max %s ms; %d of %d applied while the backlog drained",
        percentile(latencies, 50),
        percentile(latencies, 99),
        record["high_max_ms"],
        during,
        len(latencies),
    )


def absorb_flood(bench: Bench, flood_path: Path, flood_n: int) -> float:
    """Publish the flood; seconds from its first job's timestamp to the moment BullMQ holds none of it."""
    with open(flood_path, "rb") as flood_in:
        publisher = subprocess.Popen(
            bench.node_args("publish.mjs"), cwd=NODE_DIR, stdin=flood_in, stdout=subprocess.PIPE, env=bench.env
        )
        first_ts = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if first_ts is None:
                raw = bench.bullmq.hget(bench.key("1"), "timestamp")
                first_ts = int(raw) / 1000 if raw else None
            added = int(bench.bullmq.get(bench.key("id")) or 0)
            waiting, active = bench.bullmq_depth()
            if first_ts is not None and added >= flood_n and waiting == 0 and active == 0:
                break
            time.sleep(0.005)
        if first_ts is None:
            raise RuntimeError("the flood's first job did not reach BullMQ within 600 s")
        absorbed_at = time.time()
        publisher.wait(60)
    return absorbed_at - first_ts


def measure_backlog(bench: Bench, base: int, flood_n: int) -> Backlog:
    """The Celery backlog the flood left, and the workers' drain rate over 2 s."""
    low_messages = broker.queue_depths(bench.broker, ["low"])["low"]
    done0 = sum(db.inbox_statuses(base).values())
    time.sleep(2)
    done1 = sum(db.inbox_statuses(base).values())
    rate = max((done1 - done0) / 2, 1)
    remaining = max(flood_n - done1, 0)
    spread_s = min(0.85 * remaining / rate, SPREAD_MAX_S) if remaining else 5.0
    return Backlog(remaining=remaining, low_messages=low_messages, rate=rate, spread_s=spread_s)


def publish_spread(bench: Bench, highs: Sequence[Mapping[str, Any]], spread_s: float) -> None:
    """One job at a time, evenly over `spread_s`, through one Node publisher."""
    high_pub = subprocess.Popen(
        bench.node_args("publish.mjs", "--chunk", "1"),
        cwd=NODE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=bench.env,
    )
    high_in = high_pub.stdin
    assert high_in is not None  # stdin=PIPE
    t0 = time.monotonic()
    for i, job in enumerate(highs):
        target = t0 + spread_s * i / max(len(highs) - 1, 1)
        time.sleep(max(0.0, target - time.monotonic()))
        high_in.write((json.dumps(job) + "\n").encode())
        high_in.flush()
    high_in.close()
    high_pub.wait(60)


def high_latencies_ms(base: int) -> list[float]:
    """Each applied high event's latency, job timestamp to application, sorted."""
    rows = db.sql(
        "SELECT EXTRACT(EPOCH FROM (applied_at - job_timestamp)) * 1000 FROM messaging_events_inboundevent "
        "WHERE id > %s AND event_type = %s AND applied_at IS NOT NULL",
        [base, HIGH_TYPE],
    )
    return sorted(float(row[0]) for row in rows)


def high_latency_split_p50_ms(base: int) -> dict[str, float | None]:
    """Where a high event's latency goes, medians: from its job's timestamp to its inbox claim (BullMQ,
    the bridge, the Celery queue, a pool child finishing its batch) and from the claim to its commit."""
    rows = db.sql(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (received_at - job_timestamp))),"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (applied_at - received_at)))"
        " FROM messaging_events_inboundevent WHERE id > %s AND event_type = %s AND applied_at IS NOT NULL",
        [base, HIGH_TYPE],
    )
    to_claim, to_applied = rows[0]
    return {
        "high_to_claim_p50_ms": round(to_claim * 1000, 1) if to_claim is not None else None,
        "high_claim_to_applied_p50_ms": round(to_applied * 1000, 1) if to_applied is not None else None,
    }


def high_bridge_p50_ms(bench: Bench, flood_n: int, high_n: int) -> dict[str, float | None]:
    """The BullMQ side of a high event's latency, medians from its job hash: job timestamp to the bridge's
    fetch (`processedOn`), and fetch to completion (`finishedOn`: published to Celery, then completed).
    The high jobs are the ids after the flood's (one BullMQ queue, flushed at the phase's start)."""
    fetched, held = [], []
    for job_id in range(flood_n + 1, flood_n + high_n + 1):
        job = bench.bullmq.hmget(bench.key(str(job_id)), "timestamp", "processedOn", "finishedOn")
        timestamp, processed_on, finished_on = (int(value or 0) for value in job)
        if timestamp and processed_on and finished_on:
            fetched.append(processed_on - timestamp)
            held.append(finished_on - processed_on)
    return {
        "high_to_bridge_fetch_p50_ms": statistics.median(fetched) if fetched else None,
        "high_bridge_fetch_to_complete_p50_ms": statistics.median(held) if held else None,
    }


def applied_during_backlog(base: int, flood_statuses: dict[str, int], flood_n: int) -> int:
    """High events applied before the flood's last event was (all of them while the flood still drains)."""
    backlog_end = db.sql(
        "SELECT COALESCE(MAX(COALESCE(applied_at, updated_at)), 'infinity') FROM messaging_events_inboundevent "
        "WHERE id > %s AND event_type <> %s",
        [base, HIGH_TYPE],
    )[0][0]
    flood_terminal = sum(v for k, v in flood_statuses.items() if k != "parked")
    if flood_terminal < flood_n:  # the backlog was still draining when the phase ended
        backlog_end = datetime.max.replace(tzinfo=UTC)
    return db.sql(
        "SELECT count(*) FROM messaging_events_inboundevent WHERE id > %s AND event_type = %s AND applied_at < %s",
        [base, HIGH_TYPE, backlog_end],
    )[0][0]


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return round(sorted_values[index], 1)
