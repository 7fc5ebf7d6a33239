"""The bench's database: a fresh migrated database, emptied tables, and the inbox queries the phases time."""

import contextlib
import subprocess
import sys
import time
from datetime import datetime

from bench.config import PG_STATS, ROOT, STALL_S, log

TERMINAL = ("applied", "ignored", "rejected", "failed")


def reset_database(url: str, env: dict[str, str]) -> None:
    """Drop and create the bench database, then migrate it (`manage.py migrate` in a child)."""
    import psycopg

    dbname = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)


def truncate() -> None:
    """Empty every table of both apps."""
    from django.apps import apps
    from django.db import connection

    tables = []
    for app in ("crm", "messaging_events"):
        for model in apps.get_app_config(app).get_models(include_auto_created=True):
            if model._meta.managed and not model._meta.proxy:
                tables.append(connection.ops.quote_name(model._meta.db_table))
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


def sql(query: str, params: list | None = None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchall() if cursor.description else []


def inbox_max_id() -> int:
    return sql("SELECT COALESCE(MAX(id), 0) FROM messaging_events_inboundevent")[0][0]


def inbox_statuses(after_id: int, extra: str = "", params: list | None = None) -> dict[str, int]:
    rows = sql(
        "SELECT status, count(*) FROM messaging_events_inboundevent WHERE id > %s " + extra + " GROUP BY status",
        [after_id, *(params or [])],
    )
    return dict(rows)


def wait_applied(after_id: int, expected: int, timeout_s: float, extra: str = "", params=None) -> dict:
    """Until `expected` rows past `after_id` are terminal (applied, ignored, rejected or failed)."""
    deadline = time.monotonic() + timeout_s
    last_log = last_change = time.monotonic()
    statuses: dict[str, int] = {}
    while time.monotonic() < deadline:
        current = inbox_statuses(after_id, extra, params)
        if current != statuses:
            statuses, last_change = current, time.monotonic()
        terminal = sum(v for k, v in statuses.items() if k in TERMINAL)
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


def applied_window(after_id: int) -> tuple[datetime, datetime, int]:
    first, last, count = sql(
        "SELECT MIN(job_timestamp), MAX(COALESCE(applied_at, updated_at)), count(*) "
        "FROM messaging_events_inboundevent "
        "WHERE id > %s AND status IN ('applied', 'ignored', 'rejected', 'failed')",
        [after_id],
    )[0]
    return first, last, count


def crm_counts() -> dict[str, int]:
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
            counts[table] = sql(f"SELECT count(*) FROM {table}")[0][0]
    return counts


def pg_stats_reset() -> None:
    if PG_STATS:
        sql("SELECT pg_stat_statements_reset() IS NULL")


def pg_stats_top(limit: int = 15) -> list[dict]:
    """The statements that took the most database time since the last reset (BENCH_PG_STATS=1)."""
    if not PG_STATS:
        return []
    rows = sql(
        "SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), rows, "
        "left(regexp_replace(query, '\\s+', ' ', 'g'), 300) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "ORDER BY total_exec_time DESC LIMIT %s",
        [limit],
    )
    keys = ("calls", "total_ms", "mean_ms", "rows", "query")
    return [dict(zip(keys, (float(v) if hasattr(v, "as_tuple") else v for v in row), strict=True)) for row in rows]


def known_contacts(tag: str, limit: int) -> list:
    """Contacts of stream `tag` the CRM has linked (as far as an earlier phase applied them)."""
    from bench import stream

    return [
        stream.Contact(tenant, contact_id)
        for contact_id, tenant in sql(
            "SELECT l.messaging_contact_id, t.external_id FROM crm_contactlink l "
            "JOIN crm_tenant t ON t.id = l.tenant_id WHERE l.messaging_contact_id LIKE %s "
            "AND l.messaging_contact_id NOT LIKE '%%~%%' ORDER BY l.id LIMIT %s",
            [f"c-{tag}-%", limit],
        )
    ]
