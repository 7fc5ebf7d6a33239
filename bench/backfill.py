"""Backfill phase: `backfill_contacts` in bulk and row by row, into tables that already hold 10x the file.

The tables are first filled in SQL with `prefill_factor` x `rows` profiles (each with a contact link
and an email consent statement), spread over the file's tenants. Then, in this process, with real commits:

- bulk: a file of `rows` new contacts (email, a phone for one in three, one to three opt-ins);
- the same file again (every row `unchanged`);
- row by row: another file of `per_row_rows` new contacts through `--row-by-row`.

    DATABASE_URL=… python -m bench.backfill --rows 20000 --per-row-rows 2000
"""

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

TENANTS = 4


def write_file(path: Path, rows: int, tag: str, phone_base: int) -> None:
    with path.open("w") as handle:
        for n in range(rows):
            row = {
                "tenantId": f"bench-tenant-{n % TENANTS}",
                "contactId": f"{tag}-{n}",
                "email": f"{tag}.{n}@example.com",
                "firstName": f"First{n}",
                "lastName": f"Last{n}",
                "emailOptIn": n % 4 != 0,
                "updatedAt": "2024-05-01T10:00:00Z",
            }
            if n % 3 == 0:
                row["phoneNumber"] = f"+2783{(phone_base + n) % 10_000_000:07d}"
                row["smsOptIn"] = n % 2 == 0
            if n % 5 == 0:
                row["whatsappOptIn"] = True
            handle.write(json.dumps(row) + "\n")


_PREFILL_SQL = """
WITH t AS (
    SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM crm_tenant WHERE external_id LIKE 'bench-tenant-%%'
),
p AS (
    INSERT INTO crm_profile (tenant_id, first_name, last_name, email, phone, email_opt_in, engagement_score,
                             engagement_breakdown, field_sources, consent_reports, is_stub, created_at, updated_at)
    SELECT t.id, 'Seed', 'Row' || g, 'seed.' || g || '@example.com', '', true, 0, '{}', '{}', '{}', false, now(), now()
    FROM generate_series(1, %(rows)s) AS g JOIN t ON t.n = g %% %(tenants)s
    RETURNING id, tenant_id, email
), l AS (
    INSERT INTO crm_contactlink (tenant_id, profile_id, messaging_contact_id, created_at)
    SELECT tenant_id, id, 'seed-' || id, now() FROM p
), a AS (
    INSERT INTO crm_contactaddress (tenant_id, contact_id, kind, address, occurred_at, source_key)
    SELECT tenant_id, 'seed-' || id, 'email', email, now(), 'seed-' || id FROM p
)
INSERT INTO crm_consentchange (tenant_id, profile_id, channel, opted_in, occurred_at, recorded_at, source,
                               lawful_basis, superseded, tiebreak, address, address_stated, contact_id, warning)
SELECT tenant_id, id, 'email', true, now(), now(), 'messaging_event', '', false, 'messaging_event:seed-' || id,
       email, true, 'seed-' || id, ''
FROM p
"""


def prefill(rows: int) -> float:
    """Seconds to add `rows` linked profiles with one consent statement each, then ANALYZE."""
    from django.db import connection, transaction

    from crm.services.tenants import tenant_get_or_create

    started = time.monotonic()
    for n in range(TENANTS):
        tenant_get_or_create(f"bench-tenant-{n}")
    with transaction.atomic(), connection.cursor() as cursor:
        # The foreign keys are checked at commit, one trigger call per row (minutes for a million rows);
        # the rows are consistent by construction, so this bench-only fill skips them (superuser).
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(_PREFILL_SQL, {"rows": rows, "tenants": TENANTS})
    with connection.cursor() as cursor:
        for table in ("crm_profile", "crm_contactlink", "crm_contactaddress", "crm_consentchange"):
            cursor.execute(f"ANALYZE {table}")
    return time.monotonic() - started


def _timed_import(path: Path, **options: Any) -> tuple[float, dict]:
    from messaging_events.contact_export import contacts_backfill

    started = time.perf_counter()
    result = contacts_backfill(path=path, **options)
    return time.perf_counter() - started, dict(result.counts)


def measure(*, rows: int, per_row_rows: int, prefill_factor: int, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    tag = f"bf{int(time.time())}"
    bulk_file, per_row_file = work / f"{tag}-bulk.jsonl", work / f"{tag}-per-row.jsonl"
    write_file(bulk_file, rows, f"{tag}b", phone_base=0)
    write_file(per_row_file, per_row_rows, f"{tag}r", phone_base=5_000_000)  # no number shared with the bulk file
    prefill_s = prefill(rows * prefill_factor)
    bulk_s, bulk_counts = _timed_import(bulk_file)
    rerun_s, rerun_counts = _timed_import(bulk_file)
    per_row_s, per_row_counts = _timed_import(per_row_file, row_by_row=True)
    bulk_rate, per_row_rate = rows / bulk_s, per_row_rows / per_row_s
    return {
        "rows": rows,
        "per_row_rows": per_row_rows,
        "prefilled_profiles": rows * prefill_factor,
        "prefill_s": round(prefill_s, 1),
        "bulk_s": round(bulk_s, 2),
        "bulk_counts": bulk_counts,
        "rerun_s": round(rerun_s, 2),
        "rerun_counts": rerun_counts,
        "per_row_s": round(per_row_s, 2),
        "per_row_counts": per_row_counts,
        "backfill_rows_per_s": round(bulk_rate),
        "backfill_rerun_rows_per_s": round(rows / rerun_s),
        "backfill_row_by_row_rows_per_s": round(per_row_rate, 1),
        "backfill_bulk_vs_row_by_row": round(bulk_rate / per_row_rate, 1),
    }


def main() -> None:
    import django

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--per-row-rows", type=int, default=2_000)
    parser.add_argument("--prefill-factor", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path(".dev/bench-backfill"))
    args = parser.parse_args()
    django.setup()
    logging.disable(logging.INFO)  # one line per rejected row otherwise; there are none here
    figures = measure(
        rows=args.rows, per_row_rows=args.per_row_rows, prefill_factor=args.prefill_factor, work=args.work
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
