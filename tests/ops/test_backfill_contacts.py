"""backfill_contacts: exact counts, idempotency, --dry-run writes nothing, consent LWW, bounded memory."""

import contextlib
import re
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import psutil
import pytest
from django.core.management import CommandError, call_command

from crm.models import ConsentChange, ContactLink, MarketingConsent, Profile, Tenant
from crm.services.backfill import BackfillResult
from crm.services.contacts import ContactEventKind, ContactStatement, contact_statement_apply
from messaging_events.contact_export import RowInvalid, read_csv, validate_row  # RowInvalid: a bad row's one error
from tests.ops.contact_files import write_csv, write_jsonl
from tests.processes import ROOT, Processes, manage_command

SAMPLES = ROOT / "docs" / "samples"
CRM_TABLES = (Tenant, Profile, ContactLink, ConsentChange, MarketingConsent)


def _live_thandi_created(contact_id: str, *, opt_ins: dict[str, bool], occurred_at: datetime, source_key: str) -> None:
    """A live contact.created for the first person of docs/samples/contacts.csv, as the pipeline applies it."""
    contact_statement_apply(
        ContactStatement(
            kind=ContactEventKind.CREATED,
            tenant_external_id="acme",
            contact_id=contact_id,
            email="thandi.nkosi@example.com",
            phone=None,
            first_name="Thandi",
            last_name="Nkosi",
            opt_ins=opt_ins,
            occurred_at=occurred_at,
            source_key=source_key,
        )
    )


def _backfill(*args: str) -> str:
    out = StringIO()
    call_command("backfill_contacts", *args, "--no-progress", stdout=out)
    return out.getvalue()


def _counts(output: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"^\s+(?:would be )?(\w+)\s+(\d+)$", output, re.M)}


def _table_sizes() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in CRM_TABLES}


@pytest.mark.django_db
def test_csv_sample_twice_second_run_changes_nothing() -> None:
    first = _backfill(str(SAMPLES / "contacts.csv"))
    assert _counts(first) == {"created": 6, "linked": 0, "updated": 0, "unchanged": 0, "rejected": 5}
    assert "contacts.csv (csv): 11 rows" in first
    for line, reason in [
        (6, "email: Value error, is not a valid email address"),
        (7, "phoneNumber: Value error, is not a valid phone number"),
        (8, "emailOptIn: not a boolean"),
        (9, "contactId: Field required"),
        (11, "updatedAt: must be an ISO 8601 timestamp"),
    ]:
        assert f"line {line}: {reason}" in first
    sizes = _table_sizes()
    assert sizes["Profile"] == 6 and sizes["ContactLink"] == 6 and sizes["Tenant"] == 2

    profile = ContactLink.objects.get(messaging_contact_id="ct-0002").profile
    assert (profile.email, profile.phone) == ("pieter.botha@example.com", "+27825550102")  # normalised
    assert (profile.email_opt_in, profile.sms_opt_in) == (True, False)

    second = _backfill(str(SAMPLES / "contacts.csv"))
    assert _counts(second) == {"created": 0, "linked": 0, "updated": 0, "unchanged": 6, "rejected": 5}
    assert _table_sizes() == sizes


@pytest.mark.django_db
def test_jsonl_sample_and_tenant_override() -> None:
    first = _backfill(str(SAMPLES / "contacts.jsonl"), "--tenant", "override-tenant")
    assert _counts(first) == {"created": 4, "linked": 0, "updated": 0, "unchanged": 0, "rejected": 4}
    assert "line 6: not JSON" in first
    assert "line 7: a line must hold a JSON object, got list" in first
    assert list(Tenant.objects.values_list("external_id", flat=True)) == ["override-tenant"]
    second = _backfill(str(SAMPLES / "contacts.jsonl"), "--tenant", "override-tenant")
    assert _counts(second)["unchanged"] == 4


@pytest.mark.django_db
def test_dry_run_reports_what_would_change_and_writes_nothing() -> None:
    dry = _backfill(str(SAMPLES / "contacts.csv"), "--dry-run")
    assert "DRY RUN (rolled back, nothing written)" in dry
    assert _counts(dry) == {"created": 6, "linked": 0, "updated": 0, "unchanged": 0, "rejected": 5}
    assert all(n == 0 for n in _table_sizes().values())

    # After a real run, a dry run of the same file says nothing would change.
    _backfill(str(SAMPLES / "contacts.csv"))
    sizes = _table_sizes()
    assert _counts(_backfill(str(SAMPLES / "contacts.csv"), "--dry-run"))["unchanged"] == 6
    assert _table_sizes() == sizes


@pytest.mark.django_db
def test_existing_profile_is_linked_by_email(tmp_path: Path) -> None:
    _live_thandi_created(
        "live-contact-1", opt_ins={}, occurred_at=datetime(2026, 9, 1, tzinfo=UTC), source_key="live-1"
    )
    counts = _counts(_backfill(str(SAMPLES / "contacts.csv")))
    assert counts["linked"] == 1 and counts["created"] == 5
    assert (
        ContactLink.objects.get(messaging_contact_id="ct-0001").profile
        == ContactLink.objects.get(messaging_contact_id="live-contact-1").profile
    )


@pytest.mark.django_db
def test_backfill_never_overrides_a_newer_live_consent_decision(tmp_path: Path) -> None:
    # Live: the person opted out of email on 2026-10-20.
    _live_thandi_created(
        "ct-0001", opt_ins={"email": False}, occurred_at=datetime(2026, 10, 20, tzinfo=UTC), source_key="live-optout"
    )
    # The export row (updatedAt 2026-10-01) says opted in: older, so it must not win.
    _backfill(str(SAMPLES / "contacts.csv"))
    profile = ContactLink.objects.get(messaging_contact_id="ct-0001").profile
    assert profile.email_opt_in is False
    # Rows without a timestamp use --as-of: an old one cannot override either.
    path = tmp_path / "one.csv"
    path.write_text("tenantId,contactId,emailOptIn\nacme,ct-0001,true\n")
    _backfill(str(path), "--as-of", "2026-10-10T00:00:00Z")
    profile.refresh_from_db()
    assert profile.email_opt_in is False
    # ... while a newer --as-of does (it is then the latest statement).
    _backfill(str(path), "--as-of", (datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    profile.refresh_from_db()
    assert profile.email_opt_in is True


@pytest.mark.django_db
def test_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "contacts.txt"
    path.write_text("x")
    with pytest.raises(CommandError, match="--format"):
        _backfill(str(path))
    headerless = tmp_path / "contacts.csv"
    headerless.write_text("email\nx@example.com\n")
    with pytest.raises(CommandError, match="contactId"):
        _backfill(str(headerless))


@pytest.mark.slow  # 20,000 rows: over a minute on the shared machine
def test_reading_and_validating_20k_rows_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    write_csv(path, 20_000, bad_every=1000)
    result = BackfillResult()
    now = datetime.now(UTC)
    tracemalloc.start()
    valid = bad = 0
    for row in read_csv(path, result):
        try:
            validate_row(row, tenant=None, default_occurred_at=now)
            valid += 1
        except RowInvalid:
            bad += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (valid, bad) == (19_980, 20)
    assert peak < 5 * 1024 * 1024, f"peak {peak} bytes: rows are being kept"


@pytest.mark.processes
@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
def test_10k_row_import_counts_and_bounded_memory(tmp_path: Path, processes: Processes) -> None:
    # A real subprocess import; the per-row memory bound is pinned in-process by the tracemalloc test above.
    rows = 10_000
    path = tmp_path / "contacts-10k.jsonl"
    bad = write_jsonl(path, rows, bad_every=1000)
    proc = processes.start("backfill", manage_command("backfill_contacts", str(path), "--no-progress"))
    child = psutil.Process(proc.popen.pid)
    max_rss = 0
    started = time.monotonic()
    while proc.popen.poll() is None and time.monotonic() - started < 600:
        with contextlib.suppress(psutil.Error):
            max_rss = max(max_rss, child.memory_info().rss)
        time.sleep(0.1)
    code = proc.popen.wait(5)
    seconds = time.monotonic() - started
    output = proc.output()
    assert code == 0, output[-3000:]
    counts = _counts(output)
    assert counts == {"created": rows - bad, "linked": 0, "updated": 0, "unchanged": 0, "rejected": bad}
    assert Profile.objects.count() == rows - bad
    print(f"{rows}-row backfill: {seconds:.1f}s, max RSS {max_rss / 2**20:.0f} MiB", file=sys.stderr)
    assert max_rss < 250 * 2**20, f"backfill max RSS {max_rss / 2**20:.0f} MiB"
