"""The end-to-end phases: bridge + workers (Procfile) + beat apply a stream published by the Node client.

e2e (the mixed stream on empty tables), e2e_campaign (a campaign to the contacts e2e linked),
e2e_per_event (the mixed stream with BRIDGE_BATCH_SIZE=1) and scaling (stream b over tables grown to
10x the stream's data). The rate of each is the events that reached a final state over the time from
the first job's timestamp to the last application.
"""

import contextlib
import time
from pathlib import Path

from bench import db
from bench.config import E2E_BUDGET_S, PHASES, SIZES, log
from bench.context import Bench
from harness.process import ManagedProcess


def run_e2e(bench: Bench, name: str, stream_path: Path, bridge_env: dict | None = None) -> float | None:
    """One stream through the whole pipeline; its rate in events/s (None when nothing was applied). It waits
    for as many terminal inbox rows as the stream file has jobs (each job of a stream is its own event)."""
    with stream_path.open() as lines:
        size = sum(1 for _ in lines)
    record = bench.phase(name)
    bench.flush_redis()
    db.pg_stats_reset()
    base = db.inbox_max_id()
    workers = bench.start_workers(f"worker-{name}")
    bridge = bench.start_bridge(f"bridge-{name}", bridge_env)
    try:
        published = bench.publish(stream_path)
        done = db.wait_applied(base, size, timeout_s=E2E_BUDGET_S)
        first, last, count = db.applied_window(base)
    finally:
        bench.stop(bridge)
        for proc in workers:
            bench.stop(proc)
    record["fallback_batches"] = fallbacks_logged(workers[0])
    seconds = (last - first).total_seconds() if first and last else None
    rate = count / seconds if seconds else None
    record["pg_top_statements"] = db.pg_stats_top()
    record.update(
        events=size,
        published=published["published"],
        terminal=count,
        seconds=seconds,
        complete=done["complete"],
        statuses=done["statuses"],
        bridge_env=bridge_env or {},
    )
    log.info("  %s: %s events in %.1fs = %s events/s %s", name, count, seconds or 0, round(rate or 0), done["statuses"])
    return round(rate) if rate else None


def fallbacks_logged(worker: ManagedProcess) -> int:
    """Set-based batches the worker rolled back and re-ran per event (its `batch_fallback` log lines)."""
    with contextlib.suppress(OSError):
        return worker.log_path.read_text(errors="replace").count("batch_fallback")
    return 0


def mixed(bench: Bench, paths: dict[str, Path]) -> None:
    """e2e: stream a on empty tables."""
    db.truncate()
    bench.results["end_to_end_events_per_s"] = run_e2e(bench, "e2e", paths["stream_a"])
    bench.details["phases"]["e2e"]["crm_rows_after"] = db.crm_counts()


def per_event(bench: Bench, paths: dict[str, Path]) -> None:
    """e2e_per_event: stream a on empty tables again, one event per Celery message."""
    db.truncate()
    bench.results["end_to_end_per_event_mode_events_per_s"] = run_e2e(
        bench, "e2e_per_event", paths["stream_a"], {"BRIDGE_BATCH_SIZE": "1"}
    )


def campaign(bench: Bench, paths: dict[str, Path], contacts: int) -> None:
    """End to end, a campaign's messages and engagement to stream a's contacts."""
    from bench import stream

    if "e2e" not in PHASES:  # the campaign goes to stream a's contacts: apply it first
        db.truncate()
        run_e2e(bench, "campaign_seed", paths["stream_a"])
    known = db.known_contacts("a", contacts)
    jobs = stream.campaign(known, tag="campaign")
    paths["campaign"] = bench.work / "campaign.jsonl"
    stream.write_jsonl(jobs, str(paths["campaign"]))
    bench.details["stream_sizes"]["campaign_events"] = len(jobs)
    bench.details["stream_sizes"]["campaign_contacts"] = len(known)
    bench.results["end_to_end_campaign_events_per_s"] = run_e2e(bench, "e2e_campaign", paths["campaign"])


def scaling(bench: Bench, paths: dict[str, Path], contacts: int) -> None:
    """End to end, stream b over a CRM prefilled to `prefill_factor` times the stream's data."""
    from bench import prefill

    record = bench.phase("scaling_prefill")
    if db.inbox_max_id() == 0:  # the stream's data, once, is what gets multiplied
        run_e2e(bench, "scaling_seed", paths["stream_a"])
    t = time.monotonic()
    # 10x the stream's data, whatever share of the stream the earlier phases applied in their budget.
    profiles = db.sql("SELECT count(*) FROM crm_profile")[0][0]
    wanted = SIZES["prefill_factor"] * contacts
    copies = max(SIZES["prefill_factor"] - 1, -(-wanted // max(profiles, 1)) - 1)
    record.update(profiles_before=profiles, target_profiles=wanted, copies=copies)
    counts = prefill.multiply(copies)
    prefill.vacuum_analyze()
    record.update(seconds=round(time.monotonic() - t, 1), rows=counts)
    log.info("  prefilled to %dx in %.1fs: %s", SIZES["prefill_factor"], record["seconds"], counts)
    bench.results["end_to_end_10x_events_per_s"] = run_e2e(bench, "scaling_10x", paths["stream_b"])
