"""The bench's results: derived ratios, the checks against the targets, bench/results/latest.json and the table."""

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psutil
import redis

from bench.config import INBOX_ONLY, NODE_DIR, QUICK, RESULTS, ROOT, SIZES, TARGETS
from bench.context import Bench
from harness.procfile import worker_command

# The figures, in the order of the table and of the JSON's top-level keys.
ORDER = [
    "node_noop_drain_jobs_per_s",
    "bridge_drain_jobs_per_s",
    "bridge_vs_node",
    "bridge_drain_two_bridges_jobs_per_s",
    "two_bridges_vs_one",
    "end_to_end_events_per_s",
    "end_to_end_vs_node",
    "end_to_end_campaign_events_per_s",
    "end_to_end_per_event_mode_events_per_s",
    "batched_vs_per_event_mode",
    "inprocess_per_event_ms_per_event",
    "inprocess_set_based_ms_per_event",
    "inprocess_set_based_speedup",
    "inprocess_signup_ms_per_event",
    "inprocess_signup_batched_ms_per_event",
    "inprocess_unpark_per_event_ms_per_event",
    "inprocess_unpark_ms_per_event",
    "fallback_batches",
    "high_priority_p50_ms",
    "high_priority_p99_ms",
    "flood_absorb_s",
    "end_to_end_10x_events_per_s",
    "scaling_ratio",
    "bridge_peak_rss_mb",
    "worker_peak_rss_mb",
    "backfill_rows_per_s",
    "backfill_row_by_row_rows_per_s",
    "backfill_bulk_vs_row_by_row",
]


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a and b else None


def derive(bench: Bench) -> None:
    """The ratios, the fallback count and the peak memory, from the phases' figures."""
    r = bench.results
    node = r.get("node_noop_drain_jobs_per_s")
    r["bridge_vs_node"] = ratio(r.get("bridge_drain_jobs_per_s"), node)
    r["two_bridges_vs_one"] = ratio(r.get("bridge_drain_two_bridges_jobs_per_s"), r.get("bridge_drain_jobs_per_s"))
    r["end_to_end_vs_node"] = ratio(r.get("end_to_end_events_per_s"), node)
    r["batched_vs_per_event_mode"] = ratio(
        r.get("end_to_end_events_per_s"), r.get("end_to_end_per_event_mode_events_per_s"), 2
    )
    r["scaling_ratio"] = ratio(r.get("end_to_end_10x_events_per_s"), r.get("end_to_end_events_per_s"))
    r["fallback_batches"] = sum(phase.get("fallback_batches", 0) for phase in bench.details["phases"].values())
    if bench.bridge_peaks:
        peak = max(bench.bridge_peaks)
        r["bridge_peak_rss_mb"] = round(peak[0], 1)
        bench.details["bridge_peak_rss_process"] = peak[1]
    if bench.worker_peaks:
        peak = max(bench.worker_peaks)
        r["worker_peak_rss_mb"] = round(peak[0], 1)
        bench.details["worker_peak_rss_process"] = peak[1]


def finish(bench: Bench, seconds: float) -> None:
    """Write bench/results/latest.json and print the table."""
    derive(bench)
    r = bench.results
    bench.details["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    bench.details["seconds"] = round(seconds, 1)
    checks = {}
    for key, (op, threshold, _) in TARGETS.items():
        value = r.get(key)
        checks[key] = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
    output = {
        **{key: r.get(key) for key in ORDER},
        "targets": {key: f"{op} {threshold}" for key, (op, threshold, _) in TARGETS.items()},
        "checks": checks,
        "quick": QUICK,
        "inbox_only_diagnostic": INBOX_ONLY,
        "n": SIZES["drain_n"],
        "stream_sizes": bench.details.get("stream_sizes"),
        "machine": machine(),
        "versions": versions(bench.bullmq),
        "git_commit": git_commit(),
        "settings": bridge_settings(),
        "recorded_at": datetime.now(UTC).isoformat(),
        "details": bench.details,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(output, indent=2, default=str) + "\n")
    print_table(output, ORDER)
    print(f"\nJSON: {RESULTS / 'latest.json'}")


def print_table(output: dict, order: list[str]) -> None:
    machine_info, details = output["machine"], output["details"]
    print()
    print(
        f"make bench{'-quick' if output['quick'] else ''}  commit {output['git_commit']['short']}"
        f"{' (dirty)' if output['git_commit']['dirty'] else ''}  {output['recorded_at'][:19]}Z"
    )
    print(
        f"machine: {machine_info['cores']} cores, {machine_info['memory_gb']} GB, {machine_info['cpu_model']}; "
        f"load {details['load_at_start']} at start, {details['load_at_end']} at end; {details['seconds']}s"
    )
    sizes = output["stream_sizes"] or {}
    print(
        f"N = {output['n']} jobs; stream {sizes.get('stream_events')} events / {sizes.get('stream_contacts')} contacts "
        f"/ {sizes.get('tenants')} tenants; flood {sizes.get('flood_low_events')} low + "
        f"{sizes.get('high_priority_events')} high; prefill {sizes.get('prefill_factor')}x"
    )
    print()
    width = max(len(k) for k in order)
    print(f"{'figure':<{width}}  {'value':>10}  {'target':<8}  result")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 8}  ------")
    for key in order:
        value = output.get(key)
        target = TARGETS.get(key)
        check = output["checks"].get(key)
        verdict = "" if target is None else ("n/a" if check is None else ("PASS" if check else "FAIL"))
        print(f"{key:<{width}}  {shown(value):>10}  {target[2] if target else '':<8}  {verdict}")


def shown(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value < 10:
        return f"{value:,.3g}"
    return f"{value:,}"


def machine() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "cpu_model": model or platform.processor(),
        "platform": platform.platform(),
    }


def versions(bullmq_redis: redis.Redis) -> dict:
    found = {"python": platform.python_version()}
    for package in ("bullmq", "celery", "kombu", "Django", "psycopg", "redis", "hiredis", "uvloop"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[f"{package.lower()}_py" if package == "bullmq" else package.lower()] = importlib.metadata.version(
                package
            )
    with contextlib.suppress(Exception):
        found["bullmq_node"] = json.loads((NODE_DIR / "node_modules" / "bullmq" / "package.json").read_text())[
            "version"
        ]
    with contextlib.suppress(Exception):
        found["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    with contextlib.suppress(Exception):
        found["redis_server"] = bullmq_redis.info("server")["redis_version"]
    with contextlib.suppress(Exception):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            found["postgresql"] = cursor.fetchone()[0]
    return found


def git_commit() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {
        "sha": git("rev-parse", "HEAD"),
        "short": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def bridge_settings() -> dict:
    from django.conf import settings

    return {
        "BRIDGE_BATCH_SIZE": settings.BRIDGE_BATCH_SIZE,
        "BRIDGE_LINGER_MS": settings.BRIDGE_LINGER_MS,
        "BRIDGE_CONCURRENCY": settings.BRIDGE_CONCURRENCY,
        "CELERY_WORKER_PREFETCH_MULTIPLIER": settings.CELERY_WORKER_PREFETCH_MULTIPLIER,
        "worker_command": " ".join(worker_command()),
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE"),
        "DEBUG": settings.DEBUG,
    }
