"""Backfill checkpoints: an interrupted import resumes after its last committed chunk, and gives the
database of one clean run; a second full run changes nothing."""

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from crm.models import BackfillCheckpoint, Profile
from crm.services.backfill import BackfillResult, file_sha256
from messaging_events.contact_export import contacts_backfill
from tests.crm.backfill_snapshot import crm_flush, crm_snapshot
from tests.ops.contact_files import write_jsonl


class _Interrupted(Exception):
    pass


def _stop_after(chunks: int):
    seen = 0

    def on_progress(result: BackfillResult) -> None:
        nonlocal seen
        seen += 1
        if seen >= chunks:
            raise _Interrupted

    return on_progress


@pytest.mark.django_db
@pytest.mark.parametrize("row_by_row", [False, True])
def test_resume_continues_after_the_last_committed_chunk(tmp_path: Path, row_by_row: bool) -> None:
    path = tmp_path / "contacts.jsonl"
    bad = write_jsonl(path, 300, bad_every=40)

    with pytest.raises(_Interrupted):
        contacts_backfill(path=path, chunk_rows=100, row_by_row=row_by_row, on_progress=_stop_after(2))
    checkpoint = BackfillCheckpoint.objects.get(file_sha256=file_sha256(path))
    assert (checkpoint.last_line, checkpoint.rows_done, checkpoint.completed) == (200, 200, False)
    assert Profile.objects.count() == 200 - 5  # lines 40, 80, 120, 160, 200 are bad

    resumed = contacts_backfill(path=path, chunk_rows=100, row_by_row=row_by_row, resume=True)
    assert resumed.resumed_after_line == 200 and resumed.rows == 100
    assert resumed.counts == {"created": 100 - 2, "linked": 0, "updated": 0, "unchanged": 0, "rejected": 2}
    checkpoint.refresh_from_db()
    assert (checkpoint.last_line, checkpoint.rows_done, checkpoint.completed) == (300, 300, True)
    assert checkpoint.counts["created"] == 300 - bad and checkpoint.counts["rejected"] == bad
    interrupted_then_resumed = crm_snapshot()

    crm_flush()
    clean = contacts_backfill(path=path, chunk_rows=100, row_by_row=row_by_row)
    assert clean.counts["created"] == 300 - bad
    assert crm_snapshot() == interrupted_then_resumed

    again = contacts_backfill(path=path, chunk_rows=100, row_by_row=row_by_row)
    assert again.counts == {"created": 0, "linked": 0, "updated": 0, "unchanged": 300 - bad, "rejected": bad}
    assert crm_snapshot() == interrupted_then_resumed


@pytest.mark.django_db
def test_without_resume_an_interrupted_file_starts_again_from_line_one(tmp_path: Path) -> None:
    path = tmp_path / "contacts.jsonl"
    write_jsonl(path, 120, bad_every=0)
    with pytest.raises(_Interrupted):
        contacts_backfill(path=path, chunk_rows=50, on_progress=_stop_after(1))
    result = contacts_backfill(path=path, chunk_rows=50)
    assert result.resumed_after_line == 0
    assert result.counts == {"created": 70, "linked": 0, "updated": 0, "unchanged": 50, "rejected": 0}


@pytest.mark.django_db
def test_command_resume_summary_and_options(tmp_path: Path) -> None:
    path = tmp_path / "contacts.jsonl"
    write_jsonl(path, 30, bad_every=0)
    with pytest.raises(_Interrupted):
        contacts_backfill(path=path, chunk_rows=10, on_progress=_stop_after(1))
    out = StringIO()
    call_command("backfill_contacts", str(path), "--resume", "--chunk-size", "10", "--no-progress", stdout=out)
    text = out.getvalue()
    assert "contacts.jsonl (jsonl): 20 rows in " in text
    assert "resumed after line 10 (committed by an earlier run)" in text
    assert re.search(r"^  created +20$", text, re.M)


@pytest.mark.django_db
def test_ctrl_c_ends_the_command_with_one_line_pointing_at_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from messaging_events.management.commands import backfill_contacts

    def interrupted(**options) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(backfill_contacts, "contacts_backfill", interrupted)
    path = tmp_path / "contacts.jsonl"
    write_jsonl(path, 3, bad_every=0)
    with pytest.raises(CommandError, match="interrupted: the chunks committed so far are kept; continue with --resume"):
        call_command("backfill_contacts", str(path), "--no-progress")
