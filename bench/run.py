"""`make bench` / `make bench-quick`: every figure of docs/performance.md, in one run, on the bench stack.

Run by scripts/bench.sh, which starts PostgreSQL and Redis of its own and exports their URLs.
Phases, in order (each figure's pair is measured minutes apart on the same machine):

1. node_noop      the real Node BullMQ Worker (no-op, concurrency 32) drains N pre-loaded jobs
2. bridge_drain   the bridge, at its defaults, drains the same N jobs into Celery, no workers running
3. e2e            bridge + workers (Procfile) + beat apply the mixed stream on empty tables
4. e2e_campaign   a campaign (sent, delivered, opens, clicks, a few bounces and failures) to the contacts e2e made
5. inprocess      the same kind of campaign applied in this process, per-event vs set-based (ms/event, ratio)
6. e2e_per_event  the mixed stream on empty tables again, with BRIDGE_BATCH_SIZE=1
7. scaling        the tables are grown to 10x the stream's data, then a new stream of the same size
8. priority       a flood of low events sits in Celery `low`; high events are published during its drain
9. backfill       empty tables grown in SQL to 10x the file, then `backfill_contacts` in bulk on BENCH_BACKFILL_ROWS
                  new contacts, the same file again, and 2,000 others row by row (bench/backfill.py)

Results: a table on stdout, and bench/results/latest.json (not committed).
Environment: BENCH_QUICK=1 for the small run; BENCH_PHASES=e2e,priority to run a subset (development);
BENCH_CONTACTS, BENCH_N, BENCH_FLOOD, BENCH_HIGH, BENCH_BACKFILL_ROWS override the sizes.
"""

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import redis

if TYPE_CHECKING:
    from bench.procs import Proc

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


def now_s() -> float:
    return time.time()


class Bench:
    def __init__(self) -> None:
        from bench.procs import RssSampler

        self.stack_dir = Path(os.environ.get("STACK_DIR", ROOT / ".dev" / "bench"))
        self.work = self.stack_dir / "run"
        self.work.mkdir(parents=True, exist_ok=True)
        for old in self.work.glob("*.log"):
            old.unlink()
        self.pid_file = self.stack_dir / "bench.pids"
        self.bullmq = redis.Redis.from_url(os.environ["BULLMQ_REDIS_URL"])
        self.broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
        self.prefix = os.environ.get("BULLMQ_PREFIX", "bull")
        self.queue = os.environ.get("BULLMQ_QUEUE", "crm-events")
        self.sampler = RssSampler()
        self.sampler.start()
        self.procs: list[Proc] = []
        self.bridge_peaks: list[tuple[float, str]] = []
        self.worker_peaks: list[tuple[float, str]] = []
        self.results: dict = {}
        self.details: dict = {"phases": {}}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}

    # --- helpers -------------------------------------------------------------------------------

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{self.queue}:{suffix}"

    def flush_redis(self) -> None:
        self.bullmq.flushdb()
        self.broker.flushdb()

    def start(self, label: str, argv: list[str], extra_env: dict | None = None):
        from bench.procs import Proc

        env = {**self.env, **(extra_env or {})}
        proc = Proc(label, argv, self.work / f"{label}.log", env, self.pid_file)
        self.procs.append(proc)
        self.sampler.add(proc)
        return proc

    def stop(self, proc) -> None:
        self.sampler.remove(proc)
        proc.stop()
        self.procs.remove(proc)
        peak = (proc.peak_rss / MB, f"{proc.label} {proc.peak_rss_process}")
        if proc.label.startswith("bridge"):
            self.bridge_peaks.append(peak)
        elif proc.label.startswith("worker"):
            self.worker_peaks.append(peak)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)

    def start_bridge(self, label: str = "bridge", extra_env: dict | None = None):
        from bench.procs import procfile_command

        proc = self.start(label, procfile_command("bridge"), extra_env)
        proc.wait_for_log("bridge_started", 60)
        return proc

    def start_workers(self, label: str = "worker"):
        from bench.procs import procfile_command

        argv = procfile_command("worker")
        if INBOX_ONLY:
            argv += ["--include", "bench.inbox_only"]
        worker = self.start(label, argv)
        beat_argv = procfile_command("beat")
        if "--schedule" in beat_argv:
            beat_argv[beat_argv.index("--schedule") + 1] = str(self.work / "celerybeat-schedule")
        beat = self.start(f"beat-{label}", beat_argv)
        worker.wait_for_log(" ready.", 90)
        beat.wait_for_log("beat: Starting", 60)
        return [worker, beat]

    def publish(self, path: Path, *, timeout_s: float = 600) -> dict:
        """The Node client adds every job of a JSON-lines file (addBulk, 1,000 at a time)."""
        with open(path, "rb") as stdin:
            out = subprocess.run(
                [
                    "node",
                    "publish.mjs",
                    "--redis",
                    os.environ["BULLMQ_REDIS_URL"],
                    "--queue",
                    self.queue,
                    "--prefix",
                    self.prefix,
                ],
                cwd=NODE_DIR,
                stdin=stdin,
                capture_output=True,
                timeout=timeout_s,
                check=True,
                env=self.env,
            )
        return json.loads(out.stdout.decode().strip().splitlines()[-1])

    def bullmq_depth(self) -> tuple[int, int]:
        pipe = self.bullmq.pipeline(transaction=False)
        pipe.llen(self.key("wait"))
        pipe.llen(self.key("active"))
        pipe.zcard(self.key("prioritized"))
        wait, active, prioritized = pipe.execute()
        return wait + prioritized, active

    def wait_bullmq_drained(self, preloaded: int, timeout_s: float) -> tuple[float, float]:
        """With `preloaded` jobs waiting and a consumer starting: (first job taken, queue empty), perf-counter times."""
        started = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            waiting, active = self.bullmq_depth()
            moment = time.perf_counter()
            if started is None and waiting < preloaded:
                started = moment
            if started is not None and waiting == 0 and active == 0:
                return started, moment
            time.sleep(0.005)
        raise TimeoutError(f"BullMQ not drained after {timeout_s}s: {self.bullmq_depth()}")

    def phase(self, name: str) -> dict:
        record = {"load_at_start": [round(x, 2) for x in os.getloadavg()], "started": datetime.now(UTC).isoformat()}
        self.details["phases"][name] = record
        log.info("=== %s (load %s)", name, record["load_at_start"])
        return record

    # --- database --------------------------------------------------------------------------------

    def reset_database(self) -> None:
        import psycopg

        url = os.environ["DATABASE_URL"]
        dbname = url.rsplit("/", 1)[1]
        admin_url = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env, check=True
        )

    def truncate(self) -> None:
        from django.apps import apps
        from django.db import connection

        tables = []
        for app in ("crm", "messaging_events"):
            for model in apps.get_app_config(app).get_models(include_auto_created=True):
                if model._meta.managed and not model._meta.proxy:
                    tables.append(connection.ops.quote_name(model._meta.db_table))
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")

    def sql(self, query: str, params: list | None = None) -> list[tuple]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(query, params or [])
            return cursor.fetchall() if cursor.description else []

    def inbox_max_id(self) -> int:
        return self.sql("SELECT COALESCE(MAX(id), 0) FROM messaging_events_inboundevent")[0][0]

    def inbox_statuses(self, after_id: int, extra: str = "", params: list | None = None) -> dict[str, int]:
        rows = self.sql(
            "SELECT status, count(*) FROM messaging_events_inboundevent WHERE id > %s " + extra + " GROUP BY status",
            [after_id, *(params or [])],
        )
        return dict(rows)

    def wait_applied(self, after_id: int, expected: int, timeout_s: float, extra: str = "", params=None) -> dict:
        """Until `expected` rows past `after_id` are terminal (applied, ignored, rejected or failed)."""
        deadline = time.monotonic() + timeout_s
        last_log = last_change = time.monotonic()
        statuses: dict[str, int] = {}
        while time.monotonic() < deadline:
            current = self.inbox_statuses(after_id, extra, params)
            if current != statuses:
                statuses, last_change = current, time.monotonic()
            terminal = sum(v for k, v in statuses.items() if k in ("applied", "ignored", "rejected", "failed"))
            if terminal >= expected:
                return {"complete": True, "statuses": statuses}
            if time.monotonic() - last_log > 10:
                log.info("  waiting: %d/%d terminal %s", terminal, expected, statuses)
                last_log = time.monotonic()
            if time.monotonic() - last_change > STALL_S:  # longer than the parked-event sweep's period
                log.warning("  no progress for %ds: giving up at %s of %d", STALL_S, statuses, expected)
                return {"complete": False, "statuses": statuses}
            time.sleep(0.5)
        log.warning("  time budget (%ds) spent: %s of %d", timeout_s, statuses, expected)
        return {"complete": False, "statuses": statuses}

    def applied_window(self, after_id: int) -> tuple[datetime, datetime, int]:
        first, last, count = self.sql(
            "SELECT MIN(job_timestamp), MAX(COALESCE(applied_at, updated_at)), count(*) "
            "FROM messaging_events_inboundevent "
            "WHERE id > %s AND status IN ('applied', 'ignored', 'rejected', 'failed')",
            [after_id],
        )[0]
        return first, last, count

    def crm_counts(self) -> dict[str, int]:
        tables = [
            "crm_profile",
            "crm_contactlink",
            "crm_activity",
            "crm_campaigninteraction",
            "crm_consentchange",
            "crm_marketingconsent",
            "crm_attributionevent",
            "crm_hardbounce",
            "messaging_events_inboundevent",
        ]
        counts = {}
        for table in tables:
            with contextlib.suppress(Exception):
                counts[table] = self.sql(f"SELECT count(*) FROM {table}")[0][0]
        return counts

    # --- phases ---------------------------------------------------------------------------------------

    def run_node_noop(self, jobs_path: Path, n: int) -> None:
        record = self.phase("node_noop")
        self.flush_redis()
        self.publish(jobs_path)
        proc = subprocess.Popen(
            [
                "node",
                "noop_worker.mjs",
                "--redis",
                os.environ["BULLMQ_REDIS_URL"],
                "--queue",
                self.queue,
                "--prefix",
                self.prefix,
                "--concurrency",
                "32",
                "--expect",
                str(n),
            ],
            cwd=NODE_DIR,
            stdout=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )
        with open(self.pid_file, "a") as pids:
            pids.write(f"{proc.pid}\n")
        try:
            started, ended = self.wait_bullmq_drained(n, 300)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        own = json.loads(out.decode().strip().splitlines()[-1])
        record.update(seconds=ended - started, own_seconds=own.get("seconds"), jobs=n)
        self.results["node_noop_drain_jobs_per_s"] = round(n / (ended - started))
        log.info("  node no-op: %d jobs/s", self.results["node_noop_drain_jobs_per_s"])

    def run_bridge_drain(self, jobs_path: Path, n: int) -> None:
        from bench.procs import procfile_command

        record = self.phase("bridge_drain")
        self.flush_redis()
        self.publish(jobs_path)
        bridge = self.start("bridge-drain", procfile_command("bridge"))
        try:
            started, ended = self.wait_bullmq_drained(n, 600)
        finally:
            self.stop(bridge)
        messages = sum(self.broker.llen(q) for q in ("high", "normal", "low"))
        record.update(seconds=ended - started, jobs=n, celery_messages=messages)
        rate = n / (ended - started)
        self.results["bridge_drain_jobs_per_s"] = round(rate)
        log.info("  bridge: %d jobs/s into %d Celery messages", rate, messages)
        self.flush_redis()

    def pg_stats_reset(self) -> None:
        if PG_STATS:
            self.sql("SELECT pg_stat_statements_reset() IS NULL")

    def pg_stats_top(self, limit: int = 15) -> list[dict]:
        """The statements that took the most database time since the last reset (BENCH_PG_STATS=1)."""
        if not PG_STATS:
            return []
        rows = self.sql(
            "SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), rows, "
            "left(regexp_replace(query, '\\s+', ' ', 'g'), 300) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY total_exec_time DESC LIMIT %s",
            [limit],
        )
        keys = ("calls", "total_ms", "mean_ms", "rows", "query")
        return [dict(zip(keys, (float(v) if hasattr(v, "as_tuple") else v for v in row), strict=True)) for row in rows]

    def run_e2e(self, name: str, stream_path: Path, size: int, bridge_env: dict | None = None) -> float | None:
        record = self.phase(name)
        self.flush_redis()
        self.pg_stats_reset()
        base = self.inbox_max_id()
        workers = self.start_workers(f"worker-{name}")
        bridge = self.start_bridge(f"bridge-{name}", bridge_env)
        try:
            published = self.publish(stream_path)
            done = self.wait_applied(base, size, timeout_s=E2E_BUDGET_S)
            first, last, count = self.applied_window(base)
        finally:
            self.stop(bridge)
            for proc in workers:
                self.stop(proc)
        record["fallback_batches"] = self.fallbacks_logged(workers[0])
        seconds = (last - first).total_seconds() if first and last else None
        rate = count / seconds if seconds else None
        record["pg_top_statements"] = self.pg_stats_top()
        record.update(
            events=size,
            published=published["published"],
            terminal=count,
            seconds=seconds,
            complete=done["complete"],
            statuses=done["statuses"],
            bridge_env=bridge_env or {},
        )
        log.info(
            "  %s: %s events in %.1fs = %s events/s %s", name, count, seconds or 0, round(rate or 0), done["statuses"]
        )
        return round(rate) if rate else None

    def fallbacks_logged(self, worker) -> int:
        """Set-based batches the worker rolled back and re-ran per event (its `batch_fallback` log lines)."""
        with contextlib.suppress(OSError):
            return worker.log_path.read_text(errors="replace").count("batch_fallback")
        return 0

    def known_contacts(self, tag: str, limit: int) -> list:
        """Contacts of stream `tag` the CRM has linked (as far as an earlier phase applied them)."""
        from bench import stream

        return [
            stream.Contact(tenant, contact_id)
            for contact_id, tenant in self.sql(
                "SELECT l.messaging_contact_id, t.external_id FROM crm_contactlink l "
                "JOIN crm_tenant t ON t.id = l.tenant_id WHERE l.messaging_contact_id LIKE %s "
                "AND l.messaging_contact_id NOT LIKE '%%~%%' ORDER BY l.id LIMIT %s",
                [f"c-{tag}-%", limit],
            )
        ]

    def run_inprocess(self) -> None:
        from bench import inprocess

        record = self.phase("inprocess")
        logging.disable(logging.INFO)  # the workers' per-event log lines, in this process
        try:
            figures = inprocess.compare(contacts=max(100, SIZES["contacts"] // 10), batch=32, repeats=3)
            signups = inprocess.signups(count=max(100, SIZES["contacts"] // 10), batch=32, repeats=3)
        finally:
            logging.disable(logging.NOTSET)
        record.update(figures)
        record["signups"] = signups
        self.results["inprocess_signup_ms_per_event"] = signups["signup_ms_per_event"]
        self.results["inprocess_per_event_ms_per_event"] = figures["per_event_ms_per_event"]
        self.results["inprocess_set_based_ms_per_event"] = figures["set_based_ms_per_event"]
        self.results["inprocess_set_based_speedup"] = figures["set_based_speedup"]
        log.info("  in-process: %s", figures)

    def run_backfill(self) -> None:
        from bench import backfill

        record = self.phase("backfill")
        self.truncate()
        logging.disable(logging.INFO)
        try:
            figures = backfill.measure(
                rows=SIZES["backfill_rows"],
                per_row_rows=SIZES["backfill_per_row_rows"],
                prefill_factor=SIZES["prefill_factor"],
                work=self.work,
            )
        finally:
            logging.disable(logging.NOTSET)
        record.update(figures)
        for key in ("backfill_rows_per_s", "backfill_row_by_row_rows_per_s", "backfill_bulk_vs_row_by_row"):
            self.results[key] = figures[key]
        log.info("  backfill: %s", figures)

    # One timed phase read top to bottom (flood, absorb, spread the high events, wait): issue 15 splits the
    # bench into a module per phase, which is where this one gets its parts.
    def run_priority(self, contacts, tag: str) -> None:  # noqa: PLR0915
        from bench import stream

        record = self.phase("priority")
        flood_n, high_n = SIZES["flood"], SIZES["high"]
        flood_path = self.work / "flood.jsonl"
        stream.write_jsonl(stream.low_flood(contacts, flood_n, tag), str(flood_path))
        highs = list(stream.preference_changes(contacts, high_n, tag))
        self.flush_redis()
        base = self.inbox_max_id()
        workers = self.start_workers("worker-priority")
        bridge = self.start_bridge("bridge-priority")
        try:
            publisher = subprocess.Popen(
                [
                    "node",
                    "publish.mjs",
                    "--redis",
                    os.environ["BULLMQ_REDIS_URL"],
                    "--queue",
                    self.queue,
                    "--prefix",
                    self.prefix,
                ],
                cwd=NODE_DIR,
                stdin=open(flood_path, "rb"),  # noqa: SIM115
                stdout=subprocess.PIPE,
                env=self.env,
            )
            # The flood: from its first job's timestamp to the moment BullMQ holds none of it.
            first_ts = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if first_ts is None:
                    raw = self.bullmq.hget(self.key("1"), "timestamp")
                    first_ts = int(raw) / 1000 if raw else None
                added = int(self.bullmq.get(self.key("id")) or 0)
                waiting, active = self.bullmq_depth()
                if first_ts is not None and added >= flood_n and waiting == 0 and active == 0:
                    break
                time.sleep(0.005)
            if first_ts is None:
                raise RuntimeError("the flood's first job did not reach BullMQ within 600 s")
            absorbed_at = now_s()
            publisher.wait(60)
            flood_absorb_s = absorbed_at - first_ts
            low_messages = self.broker.llen("low")
            # The workers' drain rate of the backlog, to spread the high events over what remains of it.
            done0 = sum(self.inbox_statuses(base).values())
            time.sleep(2)
            done1 = sum(self.inbox_statuses(base).values())
            rate = max((done1 - done0) / 2, 1)
            remaining = max(flood_n - done1, 0)
            spread_s = min(0.85 * remaining / rate, SPREAD_MAX_S) if remaining else 5.0
            log.info(
                "  flood absorbed in %.1fs; backlog %d events (%d low messages), draining at %.0f/s; "
                "publishing %d high events over %.1fs",
                flood_absorb_s,
                remaining,
                low_messages,
                rate,
                high_n,
                spread_s,
            )
            high_pub = subprocess.Popen(
                [
                    "node",
                    "publish.mjs",
                    "--redis",
                    os.environ["BULLMQ_REDIS_URL"],
                    "--queue",
                    self.queue,
                    "--prefix",
                    self.prefix,
                    "--chunk",
                    "1",
                ],
                cwd=NODE_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self.env,
            )
            high_in = high_pub.stdin
            assert high_in is not None  # stdin=PIPE
            t0 = time.monotonic()
            for i, job in enumerate(highs):
                target = t0 + spread_s * i / max(high_n - 1, 1)
                time.sleep(max(0.0, target - time.monotonic()))
                high_in.write((json.dumps(job) + "\n").encode())
                high_in.flush()
            high_in.close()
            high_pub.wait(60)
            high_filter = "AND event_type = 'contactPreference.updated'"
            high_done = self.wait_applied(base, high_n, 120, high_filter)
            flood_done = {"statuses": self.inbox_statuses(base, "AND event_type <> 'contactPreference.updated'")}
        finally:
            self.stop(bridge)
            for proc in workers:
                self.stop(proc)
        latencies = sorted(
            row[0]
            for row in self.sql(
                "SELECT EXTRACT(EPOCH FROM (applied_at - job_timestamp)) * 1000 FROM messaging_events_inboundevent "
                "WHERE id > %s AND event_type = 'contactPreference.updated' AND applied_at IS NOT NULL",
                [base],
            )
        )
        latencies = [float(x) for x in latencies]
        backlog_end = self.sql(
            "SELECT COALESCE(MAX(COALESCE(applied_at, updated_at)), 'infinity') FROM messaging_events_inboundevent "
            "WHERE id > %s AND event_type <> 'contactPreference.updated'",
            [base],
        )[0][0]
        flood_terminal = sum(v for k, v in flood_done["statuses"].items() if k != "parked")
        if flood_terminal < flood_n:  # the backlog was still draining when the phase ended
            backlog_end = datetime.max.replace(tzinfo=UTC)
        during = self.sql(
            "SELECT count(*) FROM messaging_events_inboundevent WHERE id > %s "
            "AND event_type = 'contactPreference.updated' AND applied_at < %s",
            [base, backlog_end],
        )[0][0]

        def pct(p: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, max(0, round(p / 100 * len(latencies)) - 1))], 1)

        self.results["high_priority_p50_ms"] = pct(50)
        self.results["high_priority_p99_ms"] = pct(99)
        self.results["flood_absorb_s"] = round(flood_absorb_s, 2)
        record.update(
            flood=flood_n,
            high=high_n,
            high_applied=len(latencies),
            high_applied_during_backlog=during,
            high_max_ms=round(latencies[-1], 1) if latencies else None,
            high_mean_ms=round(statistics.fmean(latencies), 1) if latencies else None,
            backlog_at_high_start=remaining,
            backlog_low_messages=low_messages,
            backlog_drain_events_per_s=rate,
            spread_s=round(spread_s, 1),
            high_statuses=high_done["statuses"],
            flood_statuses=flood_done["statuses"],
        )
        log.info(
            "  high priority: p50 %s ms, p99 %s ms, max %s ms; %d of %d applied while the backlog drained",
            pct(50),
            pct(99),
            record["high_max_ms"],
            during,
            len(latencies),
        )

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> int:
        from bench import stream

        started = time.monotonic()
        self.details["load_at_start"] = [round(x, 2) for x in os.getloadavg()]
        log.info("sizes %s; phases %s", SIZES, ",".join(PHASES))
        self.reset_database()
        import django

        django.setup()
        if PG_STATS:
            self.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        contacts, tenants = SIZES["contacts"], SIZES["tenants"]
        paths, size = self.write_streams(contacts, tenants)
        n = SIZES["drain_n"]
        try:
            if "node_noop" in PHASES:
                self.run_node_noop(paths["drain"], n)
            if "bridge_drain" in PHASES:
                self.run_bridge_drain(paths["drain"], n)
            if "e2e" in PHASES:
                self.truncate()
                self.results["end_to_end_events_per_s"] = self.run_e2e("e2e", paths["stream_a"], size)
                self.details["phases"]["e2e"]["crm_rows_after"] = self.crm_counts()
            if "e2e_campaign" in PHASES:
                self.run_campaign(paths, contacts, size)
            if "inprocess" in PHASES:
                self.run_inprocess()
            if "e2e_per_event" in PHASES:
                self.truncate()
                self.results["end_to_end_per_event_mode_events_per_s"] = self.run_e2e(
                    "e2e_per_event", paths["stream_a"], size, {"BRIDGE_BATCH_SIZE": "1"}
                )
            if "scaling" in PHASES:
                self.run_scaling(paths, contacts, size)
            if "priority" in PHASES:
                if "scaling" not in PHASES:  # the flood's contacts are stream b's: apply it first
                    self.run_e2e("priority_seed", paths["stream_b"], size)
                # The flood and the consent changes name contacts the CRM knows (stream b's, as far as applied).
                known = self.known_contacts("b", contacts)
                self.details["phases"].setdefault("priority_contacts", {})["known"] = len(known)
                self.run_priority(known or stream.contacts_of(contacts, tenants, "b"), tag="flood")
            if "backfill" in PHASES:
                self.run_backfill()
        finally:
            self.stop_all()
            self.sampler.stop()
        self.finish(time.monotonic() - started)
        return 0

    def write_streams(self, contacts: int, tenants: int) -> tuple[dict[str, Path], int]:
        """Streams a and b and the drain sample, written as JSONL: their paths, and stream a's length."""
        from bench import stream

        stream_a = stream.generate(contacts, tenants, tag="a")
        stream_b = stream.generate(contacts, tenants, tag="b")
        drain_jobs = stream.sample(stream_a, SIZES["drain_n"])
        paths = {name: self.work / f"{name}.jsonl" for name in ("stream_a", "stream_b", "drain")}
        stream.write_jsonl(stream_a, str(paths["stream_a"]))
        stream.write_jsonl(stream_b, str(paths["stream_b"]))
        stream.write_jsonl(drain_jobs, str(paths["drain"]))
        self.details["stream_sizes"] = {
            "stream_events": len(stream_a),
            "stream_contacts": contacts,
            "tenants": tenants,
            "by_type": dict(sorted({j["name"]: 0 for j in stream_a}.items())),
            "drain_n": SIZES["drain_n"],
            "flood_low_events": SIZES["flood"],
            "high_priority_events": SIZES["high"],
            "prefill_factor": SIZES["prefill_factor"],
        }
        for job in stream_a:
            self.details["stream_sizes"]["by_type"][job["name"]] += 1
        return paths, len(stream_a)

    def run_campaign(self, paths: dict[str, Path], contacts: int, size: int) -> None:
        """End to end, a campaign's messages and engagement to stream a's contacts."""
        from bench import stream

        if "e2e" not in PHASES:  # the campaign goes to stream a's contacts: apply it first
            self.truncate()
            self.run_e2e("campaign_seed", paths["stream_a"], size)
        known = self.known_contacts("a", contacts)
        campaign = stream.campaign(known, tag="campaign")
        paths["campaign"] = self.work / "campaign.jsonl"
        stream.write_jsonl(campaign, str(paths["campaign"]))
        self.details["stream_sizes"]["campaign_events"] = len(campaign)
        self.details["stream_sizes"]["campaign_contacts"] = len(known)
        self.results["end_to_end_campaign_events_per_s"] = self.run_e2e(
            "e2e_campaign", paths["campaign"], len(campaign)
        )

    def run_scaling(self, paths: dict[str, Path], contacts: int, size: int) -> None:
        """End to end, stream b over a CRM prefilled to `prefill_factor` times the stream's data."""
        from bench import prefill

        record = self.phase("scaling_prefill")
        if self.inbox_max_id() == 0:  # the stream's data, once, is what gets multiplied
            self.run_e2e("scaling_seed", paths["stream_a"], size)
        t = time.monotonic()
        # 10x the stream's data, whatever share of the stream the earlier phases applied in their budget.
        profiles = self.sql("SELECT count(*) FROM crm_profile")[0][0]
        wanted = SIZES["prefill_factor"] * contacts
        copies = max(SIZES["prefill_factor"] - 1, -(-wanted // max(profiles, 1)) - 1)
        record.update(profiles_before=profiles, target_profiles=wanted, copies=copies)
        counts = prefill.multiply(copies)
        prefill.vacuum_analyze()
        record.update(seconds=round(time.monotonic() - t, 1), rows=counts)
        log.info("  prefilled to %dx in %.1fs: %s", SIZES["prefill_factor"], record["seconds"], counts)
        self.results["end_to_end_10x_events_per_s"] = self.run_e2e("scaling_10x", paths["stream_b"], size)

    def finish(self, seconds: float) -> None:
        r = self.results
        node = r.get("node_noop_drain_jobs_per_s")

        def ratio(a, b, digits=3):
            return round(a / b, digits) if a and b else None

        r["bridge_vs_node"] = ratio(r.get("bridge_drain_jobs_per_s"), node)
        r["end_to_end_vs_node"] = ratio(r.get("end_to_end_events_per_s"), node)
        r["batched_vs_per_event_mode"] = ratio(
            r.get("end_to_end_events_per_s"), r.get("end_to_end_per_event_mode_events_per_s"), 2
        )
        r["scaling_ratio"] = ratio(r.get("end_to_end_10x_events_per_s"), r.get("end_to_end_events_per_s"))
        r["fallback_batches"] = sum(phase.get("fallback_batches", 0) for phase in self.details["phases"].values())
        if self.bridge_peaks:
            peak = max(self.bridge_peaks)
            r["bridge_peak_rss_mb"] = round(peak[0], 1)
            self.details["bridge_peak_rss_process"] = peak[1]
        if self.worker_peaks:
            peak = max(self.worker_peaks)
            r["worker_peak_rss_mb"] = round(peak[0], 1)
            self.details["worker_peak_rss_process"] = peak[1]
        self.details["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
        self.details["seconds"] = round(seconds, 1)
        checks = {}
        for key, (op, threshold, _) in TARGETS.items():
            value = r.get(key)
            checks[key] = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        order = [
            "node_noop_drain_jobs_per_s",
            "bridge_drain_jobs_per_s",
            "bridge_vs_node",
            "end_to_end_events_per_s",
            "end_to_end_vs_node",
            "end_to_end_campaign_events_per_s",
            "end_to_end_per_event_mode_events_per_s",
            "batched_vs_per_event_mode",
            "inprocess_per_event_ms_per_event",
            "inprocess_set_based_ms_per_event",
            "inprocess_set_based_speedup",
            "inprocess_signup_ms_per_event",
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
        output = {
            **{key: r.get(key) for key in order},
            "targets": {key: f"{op} {threshold}" for key, (op, threshold, _) in TARGETS.items()},
            "checks": checks,
            "quick": QUICK,
            "inbox_only_diagnostic": INBOX_ONLY,
            "n": SIZES["drain_n"],
            "stream_sizes": self.details.get("stream_sizes"),
            "machine": machine(),
            "versions": versions(self.bullmq),
            "git_commit": git_commit(),
            "settings": bridge_settings(),
            "recorded_at": datetime.now(UTC).isoformat(),
            "details": self.details,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "latest.json").write_text(json.dumps(output, indent=2, default=str) + "\n")
        print_table(output, order)
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
        shown = (
            "—"
            if value is None
            else (
                f"{value:,}"
                if isinstance(value, int)
                else f"{value:,.3g}"
                if isinstance(value, float) and value < 10
                else f"{value:,}"
            )
        )
        print(f"{key:<{width}}  {shown:>10}  {target[2] if target else '':<8}  {verdict}")


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

    from bench.procs import procfile_command

    return {
        "BRIDGE_BATCH_SIZE": settings.BRIDGE_BATCH_SIZE,
        "BRIDGE_LINGER_MS": settings.BRIDGE_LINGER_MS,
        "BRIDGE_CONCURRENCY": settings.BRIDGE_CONCURRENCY,
        "CELERY_WORKER_PREFETCH_MULTIPLIER": settings.CELERY_WORKER_PREFETCH_MULTIPLIER,
        "worker_command": " ".join(procfile_command("worker")),
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE"),
        "DEBUG": settings.DEBUG,
    }


def main() -> int:
    bench = Bench()
    try:
        return bench.run()
    except BaseException:
        bench.stop_all()
        raise


if __name__ == "__main__":
    sys.exit(main())
