"""`make bench` / `make bench-quick`: every figure of docs/performance.md, in one run, on the bench stack.

Run by scripts/bench.sh, which starts PostgreSQL and Redis of its own and exports their URLs.
Phases, in order (each figure's pair is measured minutes apart on the same machine), one module each
under bench/phases/, each a function of the `Bench` context (bench/context.py):

1. node_noop      the real Node BullMQ Worker (no-op, concurrency 32) drains N pre-loaded jobs   (drain.py)
2. bridge_drain   the bridge, at its defaults, drains the same N jobs into Celery, no workers running; then two bridges
3. e2e            bridge + workers (Procfile) + beat apply the mixed stream on empty tables   (e2e.py)
4. e2e_campaign   a campaign (sent, delivered, opens, clicks, a few bounces and failures) to the contacts e2e made
5. inprocess      the same kind of campaign applied in this process, per-event vs set-based (ms/event, ratio)
6. e2e_per_event  the mixed stream on empty tables again, with BRIDGE_BATCH_SIZE=1
7. scaling        the tables are grown to 10x the stream's data, then a new stream of the same size
8. priority       a flood of low events sits in Celery `low`; high events are published during its drain
9. backfill       empty tables grown in SQL to 10x the file, then `backfill_contacts` in bulk on BENCH_BACKFILL_ROWS
                  new contacts, the same file again, and 2,000 others row by row (bench/backfill.py)

Results (bench/report.py): a table on stdout, and bench/results/latest.json (not committed).
Environment (bench/config.py): BENCH_QUICK=1 for the small run; BENCH_PHASES=e2e,priority to run a subset
(development); BENCH_CONTACTS, BENCH_N, BENCH_FLOOD, BENCH_HIGH, BENCH_BACKFILL_ROWS override the sizes.
"""

import os
import sys
import time
from pathlib import Path

from bench import db, report
from bench.config import PG_STATS, PHASES, SIZES, log
from bench.context import Bench
from bench.phases import backfill, drain, e2e, inprocess, priority


def run(bench: Bench) -> int:
    started = time.monotonic()
    bench.details["load_at_start"] = [round(x, 2) for x in os.getloadavg()]
    log.info("sizes %s; phases %s", SIZES, ",".join(PHASES))
    db.reset_database(os.environ["DATABASE_URL"], bench.env)
    import django

    django.setup()
    if PG_STATS:
        db.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    contacts, tenants = SIZES["contacts"], SIZES["tenants"]
    paths = write_streams(bench, contacts, tenants)
    try:
        run_phases(bench, paths, contacts, tenants)
    finally:
        bench.stop_all()
        bench.sampler.stop()
    report.finish(bench, time.monotonic() - started)
    return 0


def run_phases(bench: Bench, paths: dict[str, Path], contacts: int, tenants: int) -> None:
    """The phases BENCH_PHASES names, in their fixed order."""
    from bench import stream

    n = SIZES["drain_n"]
    if "node_noop" in PHASES:
        drain.node_noop(bench, paths["drain"], n)
    if "bridge_drain" in PHASES:
        drain.bridge_drain(bench, paths["drain"], n)
    if "e2e" in PHASES:
        e2e.mixed(bench, paths)
    if "e2e_campaign" in PHASES:
        e2e.campaign(bench, paths, contacts)
    if "inprocess" in PHASES:
        inprocess.run(bench)
    if "e2e_per_event" in PHASES:
        e2e.per_event(bench, paths)
    if "scaling" in PHASES:
        e2e.scaling(bench, paths, contacts)
    if "priority" in PHASES:
        if "scaling" not in PHASES:  # the flood's contacts are stream b's: apply it first
            e2e.run_e2e(bench, "priority_seed", paths["stream_b"])
        # The flood and the consent changes name contacts the CRM knows (stream b's, as far as applied).
        known = db.known_contacts("b", contacts)
        bench.details["phases"].setdefault("priority_contacts", {})["known"] = len(known)
        priority.run(bench, known or stream.contacts_of(contacts, tenants, "b"), tag="flood")
    if "backfill" in PHASES:
        backfill.run(bench)


def write_streams(bench: Bench, contacts: int, tenants: int) -> dict[str, Path]:
    """Streams a and b and the drain sample, written as JSONL: their paths."""
    from bench import stream

    stream_a = stream.generate(contacts, tenants, tag="a")
    stream_b = stream.generate(contacts, tenants, tag="b")
    drain_jobs = stream.sample(stream_a, SIZES["drain_n"])
    paths = {name: bench.work / f"{name}.jsonl" for name in ("stream_a", "stream_b", "drain")}
    stream.write_jsonl(stream_a, str(paths["stream_a"]))
    stream.write_jsonl(stream_b, str(paths["stream_b"]))
    stream.write_jsonl(drain_jobs, str(paths["drain"]))
    bench.details["stream_sizes"] = {
        "stream_events": len(stream_a),
        "stream_b_events": len(stream_b),
        "stream_contacts": contacts,
        "tenants": tenants,
        "by_type": dict(sorted({j["name"]: 0 for j in stream_a}.items())),
        "drain_n": SIZES["drain_n"],
        "flood_low_events": SIZES["flood"],
        "high_priority_events": SIZES["high"],
        "prefill_factor": SIZES["prefill_factor"],
    }
    for job in stream_a:
        bench.details["stream_sizes"]["by_type"][job["name"]] += 1
    return paths


def main() -> int:
    bench = Bench()
    try:
        return run(bench)
    except BaseException:
        bench.stop_all()
        raise


if __name__ == "__main__":
    sys.exit(main())
