"""The bench's sizes, time budgets, phases and targets, from the environment (see bench/run.py)."""

import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
RESULTS = ROOT / "bench" / "results"
MB = 1024 * 1024

QUICK = os.environ.get("BENCH_QUICK") == "1"
SIZES = {
    "contacts": int(os.environ.get("BENCH_CONTACTS", 1_000 if QUICK else 10_000)),
    "tenants": 4,
    "drain_n": int(os.environ.get("BENCH_N", 5_000 if QUICK else 20_000)),
    "flood": int(os.environ.get("BENCH_FLOOD", 5_000 if QUICK else 50_000)),
    "high": int(os.environ.get("BENCH_HIGH", 200)),
    "prefill_factor": 10,
    "backfill_rows": int(os.environ.get("BENCH_BACKFILL_ROWS", 20_000 if QUICK else 100_000)),
    "backfill_per_row_rows": 2_000,
}
# Time bounds, so that a slow pipeline still gives its figures within the run's budget: an end-to-end
# phase stops waiting after E2E_BUDGET_S and its rate is then the events applied by then over the time
# they took (the phase is marked incomplete); the high-priority events are spread over at most SPREAD_MAX_S.
E2E_BUDGET_S = float(os.environ.get("BENCH_E2E_BUDGET_S", 20 if QUICK else 120))
SPREAD_MAX_S = float(os.environ.get("BENCH_SPREAD_MAX_S", 15 if QUICK else 90))
ALL_PHASES = (
    "node_noop",
    "bridge_drain",
    "e2e",
    "e2e_campaign",
    "inprocess",
    "e2e_per_event",
    "scaling",
    "priority",
    "backfill",
)
INBOX_ONLY = os.environ.get("BENCH_INBOX_ONLY") == "1"  # diagnostic: no CRM work (bench/inbox_only.py)
PG_STATS = os.environ.get("BENCH_PG_STATS") == "1"  # scripts/bench.sh loads pg_stat_statements
STALL_S = int(os.environ.get("BENCH_STALL_S", 90))
PHASES = tuple(p for p in os.environ.get("BENCH_PHASES", ",".join(ALL_PHASES)).split(",") if p)

TARGETS = {
    # key: (comparison, threshold, label)
    "bridge_drain_jobs_per_s": (">=", 2000, "≥ 2,000"),
    "end_to_end_events_per_s": (">=", 1000, "≥ 1,000"),
    "end_to_end_campaign_events_per_s": (">=", 1500, "≥ 1,500"),
    "batched_vs_per_event_mode": (">=", 5.0, "≥ 5x"),
    "high_priority_p99_ms": ("<=", 500, "≤ 500"),
    "scaling_ratio": (">=", 0.9, "≥ 0.9"),
    "bridge_peak_rss_mb": ("<=", 150, "≤ 150"),
    "worker_peak_rss_mb": ("<=", 250, "≤ 250"),
    "backfill_rows_per_s": (">=", 5000, "≥ 5,000"),
    "backfill_bulk_vs_row_by_row": (">=", 20.0, "≥ 20x"),
}

logging.basicConfig(level=logging.INFO, format="[bench] %(message)s", stream=sys.stderr)
log = logging.getLogger("bench")
