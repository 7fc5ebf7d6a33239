"""kill -9 in the middle of a bulk backfill, then --resume: the database of one clean run, nothing doubled."""

import os
import re
import signal
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from crm.models import BackfillCheckpoint, Profile, Tenant
from messaging_events.contact_export import contacts_backfill
from tests.crm.backfill_snapshot import crm_flush, crm_snapshot
from tests.ops.contact_files import row, write_jsonl
from tests.processes import Processes, manage_command, wait_until
from tests.processes.children import child_database_url

ROWS = 6_000
CHUNK = 300
# The row whose contact address the test holds (uncommitted), so the third chunk blocks on it: the kill
# always lands inside a chunk's open transaction, after exactly two committed chunks, however fast
# the machine (a timed kill let a quiet machine finish the file first).
BLOCKED_ROW = 2 * CHUNK + 101  # odd, so its source key is its eventId


def _counts(output: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"^\s+(\w+)\s+(\d+)$", output, re.M)}


def _committed_line() -> int:
    checkpoint = BackfillCheckpoint.objects.first()
    return checkpoint.last_line if checkpoint is not None else 0


def _hold_contact_address(values: dict[str, str]) -> psycopg.Connection:
    """An open transaction holding the ContactAddress key the backfill will write for `values`' row."""
    tenant, _ = Tenant.objects.get_or_create(external_id=values["tenantId"], defaults={"name": ""})
    blocker = psycopg.connect(child_database_url())
    blocker.execute(
        "INSERT INTO crm_contactaddress (tenant_id, contact_id, kind, address, occurred_at, source_key)"
        " VALUES (%s, %s, 'email', %s, now(), %s)",
        [tenant.pk, values["contactId"], values["email"], values["eventId"]],
    )
    return blocker


def _backfill_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.processes
@pytest.mark.timeout(600)
@pytest.mark.django_db(transaction=True)
def test_kill_9_then_resume_gives_the_database_of_one_clean_run(tmp_path: Path, processes: Processes) -> None:
    path = tmp_path / "contacts.jsonl"
    bad = write_jsonl(path, ROWS, bad_every=500)
    command = [*manage_command("backfill_contacts", str(path), "--chunk-size", str(CHUNK), "--no-progress")]
    blocker = _hold_contact_address(row(BLOCKED_ROW))
    try:
        first = processes.start("backfill-killed", command)
        wait_until(_backfill_waits_on_a_lock, timeout=300, message="the third chunk waiting on the held address")
        os.kill(first.popen.pid, signal.SIGKILL)
        first.popen.wait(10)
    finally:
        blocker.rollback()
        blocker.close()
    killed_at = _committed_line()
    assert killed_at == 2 * CHUNK, "killed inside the third chunk, after two committed ones"
    assert Profile.objects.count() < ROWS - bad

    resumed = processes.start("backfill-resumed", [*command, "--resume"])
    assert resumed.popen.wait(300) == 0, resumed.output()[-3000:]
    output = resumed.output()
    assert f"resumed after line {killed_at}" in output
    assert sum(_counts(output).values()) == ROWS - killed_at
    checkpoint = BackfillCheckpoint.objects.get()
    assert (checkpoint.last_line, checkpoint.completed, checkpoint.rows_done) == (ROWS, True, ROWS)
    assert checkpoint.counts["created"] == ROWS - bad and checkpoint.counts["rejected"] == bad
    after_kill = crm_snapshot()

    crm_flush()
    contacts_backfill(path=path, chunk_rows=CHUNK)
    assert crm_snapshot() == after_kill
