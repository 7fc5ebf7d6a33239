"""PostgreSQL's planning against its execution for the worker's statements, with their real parameters.

    DATABASE_URL=… python -m bench.planning --signups 200 --batch 32

Applies the stream's `contact.created` for new contacts, then a campaign to those contacts, through the
worker's path (`batch_apply.apply_batch`, batches of `--batch`). Every data statement of those runs is
first run under `EXPLAIN (ANALYZE, SUMMARY)` with the same parameters at the same moment, inside a
savepoint rolled back before the statement itself runs, so each figure is the statement's own cost on
the data it really met. With `--generic`, it is also run as a prepared statement under
`plan_cache_mode = force_generic_plan` (`PREPARE`, `EXPLAIN ANALYZE EXECUTE`), to compare the execution
time of the plan PostgreSQL may switch to after a prepared statement's fifth execution.

With `--round-trips`, it instead applies a few batches of each workload to warm the connection up (so that
psycopg has prepared what it prepares), then traces the wire (libpq's `PQtrace`) while one more batch of
each runs, and counts what the client sent: round trips (the server's `ReadyForQuery`), `Parse` and `Query`
messages (statements PostgreSQL parsed), `Bind` (executions of the extended protocol) and `Close`/`DEALLOCATE`.

With `--interleaved`, it times the workloads with psycopg's prepared statements off and on, the two taking
turns batch by batch on one connection (so that they share the machine's noise), and lists which plans
PostgreSQL chose for the prepared statements (`pg_prepared_statements`: custom or generic).

Prints, per statement text (by total planning time) and per workload: executions, mean planning and
execution milliseconds, and the totals per event. Both workloads run first without EXPLAIN, timed, so
that the planning time per event can be set against the wall time per event.
"""

import argparse
import json
import logging
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench import stream
from bench.inprocess import TENANTS, _apply, _bridged

_EXPLAINABLE = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


@dataclass
class _Timing:
    planning_ms: list[float] = field(default_factory=list)
    execution_ms: list[float] = field(default_factory=list)
    generic_execution_ms: list[float] = field(default_factory=list)


def _numbered(sql: str, params: Any) -> tuple[str, list[Any]]:
    """The statement with `$n` placeholders, and its parameters in that order (for `PREPARE`)."""
    values: list[Any] = []
    if isinstance(params, dict):
        numbers: dict[str, int] = {}

        def named(match: re.Match) -> str:
            name = match.group(1)
            if name not in numbers:
                values.append(params[name])
                numbers[name] = len(values)
            return f"${numbers[name]}"

        sql = re.sub(r"%\((\w+)\)s", named, sql)
    else:
        values = list(params or [])
        counter = iter(range(1, len(values) + 1))
        sql = re.sub(r"%s", lambda _: f"${next(counter)}", sql)
    return sql.replace("%%", "%"), values


class _Explainer:
    """An execute wrapper: EXPLAIN ANALYZE each data statement in a savepoint, then run it."""

    def __init__(self, *, generic: bool) -> None:
        self.generic = generic
        self.timings: dict[str, _Timing] = defaultdict(_Timing)

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
        from django.db import connection

        if not many and connection.in_atomic_block and sql.lstrip()[:6].upper().startswith(_EXPLAINABLE):
            self._explain(connection.connection, sql, params)
        return execute(sql, params, many, context)

    def _explain(self, raw: Any, sql: str, params: Any) -> None:
        import psycopg

        def plan_of(cursor: psycopg.ClientCursor) -> dict[str, Any]:
            row = cursor.fetchone()
            assert row is not None  # EXPLAIN returns one row
            return row[0][0]

        timing = self.timings[sql]
        with psycopg.ClientCursor(raw) as cursor:
            cursor.execute("SAVEPOINT bench_planning")
            try:
                cursor.execute("EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) " + sql, params)
                plan = plan_of(cursor)
                timing.planning_ms.append(plan["Planning Time"])
                timing.execution_ms.append(plan["Execution Time"])
                if self.generic:
                    cursor.execute("ROLLBACK TO SAVEPOINT bench_planning")
                    numbered, values = _numbered(sql, params)
                    cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                    cursor.execute("PREPARE bench_generic AS " + numbered)
                    arguments = ", ".join(["%s"] * len(values))
                    call = f"EXECUTE bench_generic({arguments})" if values else "EXECUTE bench_generic"
                    cursor.execute("EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) " + call, values or None)
                    timing.generic_execution_ms.append(plan_of(cursor)["Execution Time"])
            finally:
                cursor.execute("ROLLBACK TO SAVEPOINT bench_planning")
                cursor.execute("RELEASE SAVEPOINT bench_planning")
                if self.generic:
                    cursor.execute("DEALLOCATE ALL")  # bench_generic (prepared statements are not transactional)


@contextmanager
def _explaining(explainer: _Explainer) -> Iterator[None]:
    from django.db import connection

    connection.ensure_connection()
    prepare_threshold = connection.connection.prepare_threshold
    # No prepared statements while EXPLAIN runs: psycopg forgets them all at a ROLLBACK TO SAVEPOINT.
    connection.connection.prepare_threshold = None
    try:
        with connection.execute_wrapper(explainer):
            yield
    finally:
        connection.connection.prepare_threshold = prepare_threshold


def _workloads(signups: int, tag: str) -> dict[str, list[dict]]:
    """The stream's sign-ups for new contacts, then a campaign to them, as bridged jobs."""
    jobs = [job for job in stream.generate(signups, TENANTS, tag) if job["name"] == "contact.created"]
    people = stream.contacts_of(signups, TENANTS, tag)
    return {
        "contact.created": _bridged(jobs, f"{tag}-signup"),
        "campaign": _bridged(stream.campaign(people, f"{tag}-campaign"), f"{tag}-campaign"),
    }


def _label(sql: str) -> str:
    return " ".join(sql.split())[:90]


def _report(name: str, events: int, wall_ms: float, explainer: _Explainer) -> dict:
    rows: list[dict[str, Any]] = []
    for sql, t in explainer.timings.items():
        row: dict[str, Any] = {
            "statement": _label(sql),
            "calls": len(t.planning_ms),
            "planning_ms_mean": round(statistics.mean(t.planning_ms), 3),
            "execution_ms_mean": round(statistics.mean(t.execution_ms), 3),
            "planning_ms_total": round(sum(t.planning_ms), 1),
            "execution_ms_total": round(sum(t.execution_ms), 1),
        }
        if t.generic_execution_ms:
            row["generic_execution_ms_mean"] = round(statistics.mean(t.generic_execution_ms), 3)
        rows.append(row)
    rows.sort(key=lambda row: -row["planning_ms_total"])
    planning = sum(row["planning_ms_total"] for row in rows)
    execution = sum(row["execution_ms_total"] for row in rows)
    return {
        "workload": name,
        "events": events,
        "wall_ms_per_event_without_explain": round(wall_ms / events, 3),
        "planning_ms_per_event": round(planning / events, 3),
        "execution_ms_per_event": round(execution / events, 3),
        "statements": rows[:12],
    }


def measure(*, signups: int, batch: int, generic: bool, tag: str) -> list[dict]:
    from messaging_events.services import batch_apply

    plain = _workloads(signups, f"{tag}p")
    walls = {name: _apply(jobs, batch, batch_apply.apply_batch) * 1000 for name, jobs in plain.items()}
    reports = []
    for name, jobs in _workloads(signups, f"{tag}e").items():
        explainer = _Explainer(generic=generic)
        with _explaining(explainer):
            _apply(jobs, batch, batch_apply.apply_batch)
        reports.append(_report(name, len(jobs), walls[name], explainer))
    return reports


def _wire_counts(trace: str) -> dict[str, int]:
    """Messages of a libpq trace: `F` lines are the client's, `B` lines the server's."""
    counts = {"round_trips": 0, "parse": 0, "bind": 0, "simple_query": 0, "close_or_deallocate": 0}
    for line in trace.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        side, message = fields[0], fields[2].split(" ")[0]
        if side == "B" and message == "ReadyForQuery":
            counts["round_trips"] += 1
        elif side == "F" and message == "Parse":
            counts["parse"] += 1
        elif side == "F" and message == "Bind":
            counts["bind"] += 1
        elif side == "F" and message == "Query":
            counts["simple_query"] += 1
            counts["close_or_deallocate"] += "DEALLOCATE" in line
        elif side == "F" and message == "Close":
            counts["close_or_deallocate"] += 1
    return counts


def round_trips(*, signups: int, batch: int, tag: str) -> dict[str, dict[str, int]]:
    """What the client sends for one more batch of each workload on a warm connection."""
    import ctypes
    import tempfile

    from django.db import connection
    from psycopg import pq

    from messaging_events.services import batch_apply

    counts = {}
    for name, jobs in _workloads(signups, tag).items():
        warm, traced = jobs[:-batch], jobs[-batch:]
        _apply(warm, batch, batch_apply.apply_batch)
        pgconn = connection.connection.pgconn
        with tempfile.TemporaryFile("w+") as out:
            pgconn.trace(out.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                _apply(traced, batch, batch_apply.apply_batch)
            finally:
                pgconn.untrace()
                ctypes.CDLL(None).fflush(None)  # libpq writes through a C stream of its own
            out.seek(0)
            counts[name] = _wire_counts(out.read()) | {"events": len(traced)}
    return counts


MODES = ("unprepared", "prepared")


def _use(mode: str) -> None:
    """Switch the live connection's prepared statements off or on (`DJANGO_DB_PREPARED_STATEMENTS`, the
    settings' `prepare_threshold`) without reconnecting."""
    from django.db import connection

    connection.ensure_connection()
    connection.connection.prepare_threshold = 5 if mode == "prepared" else None


def interleaved(*, signups: int, batch: int, tag: str) -> dict[str, dict]:
    """ms/event of each mode, the modes taking turns batch by batch (rotating which goes first), so that
    they share the machine's noise: the stream's sign-ups for new contacts, then a campaign to them."""
    from messaging_events.services import batch_apply

    for mode in MODES:  # warm-up: every statement past psycopg's threshold in the prepared mode
        _use(mode)
        for jobs in _workloads(64, f"{tag}w{mode}").values():
            _apply(jobs, batch, batch_apply.apply_batch)
    figures: dict[str, dict] = {}
    for name, jobs in _workloads(signups, tag).items():
        seconds = dict.fromkeys(MODES, 0.0)
        events = dict.fromkeys(MODES, 0)
        batches = [jobs[start : start + batch] for start in range(0, len(jobs), batch)]
        for n, chunk in enumerate(batches):
            mode = MODES[(n + n // len(MODES)) % len(MODES)]
            _use(mode)
            seconds[mode] += _apply(chunk, batch, batch_apply.apply_batch)
            events[mode] += len(chunk)
        figures[name] = {mode: round(seconds[mode] * 1000 / events[mode], 3) for mode in MODES}
    from django.db import connection

    with connection.cursor() as cursor:  # which plans PostgreSQL chose for the prepared statements
        cursor.execute("SELECT generic_plans, custom_plans, statement FROM pg_prepared_statements ORDER BY 2 DESC")
        figures["prepared_statements"] = {_label(sql): {"generic": g, "custom": c} for g, c, sql in cursor.fetchall()}
    _use("prepared")
    return figures


def main() -> None:
    import django

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signups", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--generic", action="store_true", help="also time each statement's generic plan")
    parser.add_argument("--round-trips", action="store_true", help="count the wire messages of one batch instead")
    parser.add_argument("--interleaved", action="store_true", help="prepared statements off vs on, by turns")
    parser.add_argument("--tag", default=f"plan{int(time.time())}")
    args = parser.parse_args()
    django.setup()
    logging.disable(logging.INFO)
    if args.interleaved:
        figures: Any = interleaved(signups=args.signups, batch=args.batch, tag=args.tag)
    elif args.round_trips:
        figures = round_trips(signups=args.signups, batch=args.batch, tag=args.tag)
    else:
        figures = measure(signups=args.signups, batch=args.batch, generic=args.generic, tag=args.tag)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
