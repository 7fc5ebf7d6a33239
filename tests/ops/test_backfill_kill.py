"""kill -9 in the middle of a bulk backfill, then --resume: the database of one clean run, nothing doubled."""

import os
import re
import signal
from pathlib import Path

import pytest

from crm.models import BackfillCheckpoint, Profile
from crm.services.backfill import contacts_backfill
from tests.crm.backfill_snapshot import crm_flush, crm_snapshot
from tests.ops.conftest import python_manage, wait_for
from tests.ops.contact_files import write_jsonl

ROWS = 6_000
CHUNK = 300


def _counts(output: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"^\s+(\w+)\s+(\d+)$", output, re.M)}


def _committed_line() -> int:
    checkpoint = BackfillCheckpoint.objects.first()
    return checkpoint.last_line if checkpoint is not None else 0


@pytest.mark.processes
@pytest.mark.timeout(600)
@pytest.mark.django_db(transaction=True)
def test_kill_9_then_resume_gives_the_database_of_one_clean_run(tmp_path: Path, procs) -> None:
    path = tmp_path / "contacts.jsonl"
    bad = write_jsonl(path, ROWS, bad_every=500)
    command = [*python_manage("backfill_contacts", str(path), "--chunk-size", str(CHUNK), "--no-progress")]
    first = procs(command, "backfill-killed")
    wait_for(lambda: _committed_line() >= 2 * CHUNK, timeout=300, what="two committed chunks")
    os.kill(first.popen.pid, signal.SIGKILL)
    first.popen.wait(10)
    killed_at = _committed_line()
    assert 0 < killed_at < ROWS, "the import finished before it could be killed: grow ROWS"
    assert Profile.objects.count() < ROWS - bad

    resumed = procs([*command, "--resume"], "backfill-resumed")
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
