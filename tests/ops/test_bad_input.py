"""Every operator command answers bad input with one clear line and exit status 1, never a traceback.

Inside a file, a bad row is a rejection with its line number and the import goes on.
The commands run as an operator runs them: `python manage.py ...` in a subprocess.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT, free_port, subprocess_env


def manage(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def closed_redis_env() -> dict[str, str]:
    return subprocess_env({"BULLMQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/1"})


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "contacts.txt").write_text("contactId,tenantId\n")
    (tmp_path / "a-directory.csv").mkdir()
    return tmp_path


BAD_INPUT = [
    (("backfill_contacts", "{tmp}/missing.csv"), "missing.csv: no such file"),
    (("backfill_contacts", "{tmp}/a-directory.csv"), "a-directory.csv: is a directory"),
    (("backfill_contacts", "{tmp}/empty.csv"), "the file is empty"),
    (("backfill_contacts", "{tmp}/contacts.txt"), "cannot tell the format of contacts.txt"),
    (("backfill_contacts", "{tmp}/empty.csv", "--as-of", "yesterday"), "--as-of 'yesterday' is not an ISO 8601"),
    (("replay_events", "--since", "yesterday"), "--since 'yesterday' is not an ISO 8601"),
    (("replay_events", "--batch-size", "0"), "--batch-size must be at least 1"),
    (("rebuild_segments", "--tenant", "no-such-tenant"), "--tenant 'no-such-tenant': no such tenant"),
    (("rebuild_segments", "--segment", "999999"), "no segment 999999"),
    (("refresh_engagement_scores", "--chunk-size", "-1"), "--chunk-size must be at least 1"),
    (("export_profile", "--tenant", "no-such-tenant", "--contact-id", "c-1"), "no-such-tenant"),
    (("grant_tenant_access", "someone", "no-such-tenant", "--role", "viewer"), "no tenant with id 'no-such-tenant'"),
    (("redrive_bullmq", "--limit", "0"), "--limit must be at least 1"),
    (("publish_demo_events", "--tenants", "30"), "--tenants between 1 and 26"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a).replace("{tmp}/", "") for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_1(transactional_db, files: Path, args: tuple[str, ...], message: str) -> None:
    result = manage(*(arg.format(tmp=files) for arg in args))
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 1, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("CommandError: ") and message in lines[0], output


@pytest.mark.parametrize("command", ["redrive_bullmq", "publish_demo_events"])
def test_unreachable_bullmq_redis_is_one_line(transactional_db, command: str) -> None:
    result = manage(command, env=closed_redis_env())
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 1, output
    assert result.stderr.strip().startswith("CommandError: cannot reach the BullMQ (BULLMQ_REDIS_URL) Redis"), output
    assert len(result.stderr.strip().splitlines()) == 1, output


def test_bad_rows_are_rejected_with_their_line_numbers(transactional_db, tmp_path: Path) -> None:
    export = tmp_path / "contacts.csv"
    export.write_bytes(
        b"tenantId,contactId,firstName\n"
        b"acme,c-1,Ann\n"
        b"acme,c-2,Ren\xe9e\n"  # Latin-1, not UTF-8
        b'acme,c-3,"' + b"x" * (200 * 1024) + b'"\n'  # over the csv module's 128 KiB field limit
        b"acme,c-4,Dee\n"
    )
    result = manage("backfill_contacts", str(export), "--no-progress")
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 0, output
    assert "line 3: firstName: not UTF-8 text (byte 0xe9); re-export the file as UTF-8" in result.stdout
    assert "line 4: unreadable CSV (field larger than field limit" in result.stdout
    assert "created                      2" in result.stdout
    assert "rejected                     2" in result.stdout
