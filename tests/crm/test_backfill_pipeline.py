"""The bulk backfill validates one chunk ahead in a second process (crm.services.backfill_pipeline):
rejected rows keep their line numbers, the worker never runs more than one chunk ahead, and a
worker that fails or dies stops the run with a clear error, after the chunks committed so far."""

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from crm.models import BackfillCheckpoint, Profile
from crm.services.backfill import BackfillResult, file_sha256
from crm.services.backfill_pipeline import ValidationProcessError
from messaging_events import contact_export
from messaging_events.contact_export import contacts_backfill
from tests.ops.contact_files import write_jsonl

pytestmark = pytest.mark.django_db


def _on_line(line: int, act):
    """validate_row, except that `act()` runs when it reaches `line` (in the worker process)."""
    validate_row = contact_export.validate_row

    def patched(row, **options):
        if row.line == line:
            act()
        return validate_row(row, **options)

    return patched


def test_rejected_rows_keep_their_line_numbers_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "contacts.jsonl"
    bad = write_jsonl(path, 300, bad_every=40)  # lines 40, 80, ..., 280
    result = contacts_backfill(path=path, chunk_rows=70)
    assert [r.line for r in result.rejections] == list(range(40, 300, 40)) and bad == 7
    assert all("email" in r.reason for r in result.rejections)
    assert result.counts["created"] == 300 - bad == Profile.objects.count()


def test_the_worker_validates_at_most_one_chunk_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "contacts.jsonl"
    write_jsonl(path, 250, bad_every=0)
    validated = multiprocessing.get_context("fork").Value("i", 0)  # shared with the forked worker

    def count() -> None:
        with validated.get_lock():
            validated.value += 1

    validate_row = contact_export.validate_row

    def counting(row, **options):
        count()
        return validate_row(row, **options)

    monkeypatch.setattr(contact_export, "validate_row", counting)
    seen: list[tuple[int, int]] = []

    def on_progress(result: BackfillResult) -> None:
        seen.append((result.rows, validated.value))

    contacts_backfill(path=path, chunk_rows=50, on_progress=on_progress)
    assert [rows for rows, _ in seen] == [50, 100, 150, 200, 250]
    assert all(done <= rows + 50 for rows, done in seen), seen  # chunk n written, n+1 at most validated


def test_a_validation_crash_stops_the_command_after_the_committed_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "contacts.jsonl"
    write_jsonl(path, 200, bad_every=0)

    def crash() -> None:
        raise RuntimeError("the schema broke")

    monkeypatch.setattr(contact_export, "validate_row", _on_line(120, crash))
    with pytest.raises(
        CommandError,
        match=r"^validating the rows failed: RuntimeError: the schema broke; the chunks committed so far"
        r" are kept; continue with --resume$",
    ):
        call_command("backfill_contacts", str(path), "--chunk-size", "50", "--no-progress")
    checkpoint = BackfillCheckpoint.objects.get(file_sha256=file_sha256(path))
    assert (checkpoint.last_line, Profile.objects.count()) == (100, 100)  # chunks 1 and 2; 3 held line 120
    assert multiprocessing.active_children() == []

    monkeypatch.undo()
    resumed = contacts_backfill(path=path, chunk_rows=50, resume=True)
    assert (resumed.resumed_after_line, resumed.counts["created"], Profile.objects.count()) == (100, 100, 200)


def test_a_killed_worker_is_reported_with_its_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "contacts.jsonl"
    write_jsonl(path, 200, bad_every=0)
    monkeypatch.setattr(contact_export, "validate_row", _on_line(160, lambda: os.kill(os.getpid(), signal.SIGKILL)))
    with pytest.raises(ValidationProcessError, match=r"stopped without a word \(exit code -9\)"):
        contacts_backfill(path=path, chunk_rows=50)
    assert Profile.objects.count() == 150
    assert multiprocessing.active_children() == []


def test_an_interrupted_run_leaves_no_worker_behind(tmp_path: Path) -> None:
    path = tmp_path / "contacts.jsonl"
    write_jsonl(path, 200, bad_every=0)

    def interrupt(result: BackfillResult) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        contacts_backfill(path=path, chunk_rows=50, on_progress=interrupt)
    assert multiprocessing.active_children() == []
    assert Profile.objects.count() == 50


def test_an_interrupted_run_stops_a_worker_blocked_sending_without_killing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 2,000 rows are larger than the pipe's buffer: when the run stops, the worker is blocked
    sending the next one. Closing the pipe ends it at once; it is not left to the terminate after the wait."""
    path = tmp_path / "contacts.jsonl"
    write_jsonl(path, 6_000, bad_every=0)
    terminated = []
    real_terminate = multiprocessing.process.BaseProcess.terminate

    def spy(process: multiprocessing.process.BaseProcess) -> None:
        terminated.append(process.name)
        real_terminate(process)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "terminate", spy)

    def interrupt(result: BackfillResult) -> None:
        time.sleep(0.5)  # the worker has validated the next chunk and is sending it
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        contacts_backfill(path=path, chunk_rows=2_000, on_progress=interrupt)
    assert terminated == []
    assert multiprocessing.active_children() == []
    assert Profile.objects.count() == 2_000
