"""Two chunks in flight (crm.services.backfill_lanes): a chunk overlaps the one before it only when neither can
change the other, commits after it, and never waits for a chunk that waits for it."""

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

import crm.services.backfill as backfill
import crm.services.backfill_bulk as backfill_bulk
from crm.models import ContactLink, Profile
from crm.services.backfill import BackfillResult
from crm.services.tenants import tenant_get_or_create
from messaging_events.contact_export import contacts_backfill

pytestmark = pytest.mark.django_db(transaction=True)


def _file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"tenantId": "lanes", **row}) + "\n" for row in rows))
    return path


def _slowed(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, contacts: set[str], seconds: float) -> None:
    """Make `module.name` take `seconds` longer for rows of these contacts (a chunk kept in flight)."""
    real = getattr(module, name)

    def slow(rows: Any) -> Any:
        ids = {row.contact_id for row in (rows if isinstance(rows, list) else [rows])}
        if ids & contacts:
            time.sleep(seconds)
        return real(rows)

    monkeypatch.setattr(module, name, slow)


def test_a_chunk_naming_a_person_of_the_chunk_in_flight_goes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """la-2 shares la-1's email: its chunk waits for la-1's to commit, then links la-2 to la-1's profile, as
    one lane would. la-3 names no one else: its chunk overlaps la-2's."""
    tenant_get_or_create("lanes")
    path = _file(
        tmp_path / "shared.jsonl",
        [
            {"contactId": "la-1", "email": "shared@example.com", "emailOptIn": True},
            {"contactId": "la-2", "email": "shared@example.com", "firstName": "Ann"},
            {"contactId": "la-3", "email": "third@example.com"},
        ],
    )
    _slowed(monkeypatch, backfill_bulk, "new_contacts_write", {"la-1"}, 0.5)
    _slowed(monkeypatch, backfill, "contact_statement_apply", {"la-2"}, 0.5)

    result = contacts_backfill(path=path, chunk_rows=1)

    assert result.counts == {"created": 2, "linked": 1, "updated": 0, "unchanged": 0, "rejected": 0}
    assert result.overlapped_chunks == 1
    first = Profile.objects.get(contact_links__messaging_contact_id="la-1")
    assert sorted(first.contact_links.values_list("messaging_contact_id", flat=True)) == ["la-1", "la-2"]
    assert first.first_name == "Ann" and first.email_opt_in is True
    assert Profile.objects.count() == 2


def test_a_chunk_naming_a_person_of_any_chunk_in_flight_goes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three chunks in flight: lc-3 shares lc-1's phone, two chunks back, while lc-2 between them names no one
    else. lc-2 overlaps lc-1; lc-3 waits, then links to lc-1's profile."""
    tenant_get_or_create("lanes")
    path = _file(
        tmp_path / "two-back.jsonl",
        [
            {"contactId": "lc-1", "phoneNumber": "+27825550101", "smsOptIn": True},
            {"contactId": "lc-2", "email": "second@example.com"},
            {"contactId": "lc-3", "phoneNumber": "+27825550101", "lastName": "Ngata"},
        ],
    )
    _slowed(monkeypatch, backfill_bulk, "new_contacts_write", {"lc-1"}, 0.8)

    result = contacts_backfill(path=path, chunk_rows=1)

    assert result.overlapped_chunks == 1
    assert result.counts == {"created": 2, "linked": 1, "updated": 0, "unchanged": 0, "rejected": 0}
    first = Profile.objects.get(contact_links__messaging_contact_id="lc-1")
    assert sorted(first.contact_links.values_list("messaging_contact_id", flat=True)) == ["lc-1", "lc-3"]
    assert first.last_name == "Ngata" and first.sms_opt_in is True


def test_a_chunk_that_the_chunk_before_it_waits_for_lets_it_go_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cycle PostgreSQL cannot see: chunk 1 waits for a live transaction's lock on its profile, the live
    transaction waits for chunk 2's new contact link, and chunk 2 waits (in Python) for chunk 1 to commit.
    Chunk 2 finds itself in chunk 1's chain of blockers, rolls back and goes after it."""
    tenant_get_or_create("lanes")
    contacts_backfill(path=_file(tmp_path / "known.jsonl", [{"contactId": "lb-old", "email": "old@example.com"}]))
    profile = Profile.objects.get(contact_links__messaging_contact_id="lb-old")
    chunk_2_written = threading.Event()
    profile_locked = threading.Event()
    live_done = threading.Event()
    live_backend: list[int] = []
    real_write = backfill_bulk.new_contacts_write

    def written(rows: Any) -> Any:
        tenants = real_write(rows)
        if any(row.contact_id == "lb-new" for row in rows):
            chunk_2_written.set()
        return tenants

    monkeypatch.setattr(backfill_bulk, "new_contacts_write", written)

    def live_transaction() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                live_backend.append(connection.connection.info.backend_pid)
                cursor.execute("SELECT 1 FROM crm_profile WHERE id = %s FOR UPDATE", [profile.pk])
                profile_locked.set()
                assert chunk_2_written.wait(20)
                # Waits for chunk 2's uncommitted link of the same contact, until chunk 2 rolls back.
                cursor.execute(
                    "INSERT INTO crm_contactlink (tenant_id, profile_id, messaging_contact_id, created_at)"
                    " VALUES (%s, %s, 'lb-new', now())",
                    [profile.tenant_id, profile.pk],
                )
            live_done.set()
        finally:
            connection.close()

    live = threading.Thread(target=live_transaction, daemon=True)
    live.start()
    assert profile_locked.wait(10)
    path = _file(
        tmp_path / "cycle.jsonl",
        [
            {"contactId": "lb-old", "email": "old@example.com", "firstName": "Ben"},  # chunk 1: locks the profile
            {"contactId": "lb-new", "email": "new@example.com"},  # chunk 2: a new person
        ],
    )
    outcome: dict[str, BackfillResult] = {}

    def run() -> None:
        try:
            outcome["result"] = contacts_backfill(path=path, chunk_rows=1)
        finally:
            connection.close()

    runner = threading.Thread(target=run, daemon=True)
    with caplog.at_level("INFO", logger="crm.services.backfill_lanes"):
        runner.start()
        runner.join(30)
        if runner.is_alive():  # the cycle was never broken: end it, so that the test fails instead of hanging
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", live_backend)
            runner.join(30)
        live.join(30)

    assert live_done.is_set()
    assert "result" in outcome, "the backfill never finished: chunk 2 kept waiting for chunk 1"
    result = outcome["result"]
    assert result.overlapped_chunks == 0
    assert "backfill_lane_yield" in caplog.text
    # The live link came first; the file's row for lb-new then found it (the person is not created twice).
    assert ContactLink.objects.get(messaging_contact_id="lb-new").profile_id == profile.pk
    assert Profile.objects.count() == 1
    assert Profile.objects.get(pk=profile.pk).first_name == "Ben"
    assert result.counts["created"] == 0 and result.rows == 2


def test_a_chunk_whose_contact_is_linked_while_it_overlaps_goes_after_the_chunk_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unique violation on the new contact link of an overlapping chunk (a live worker linked the contact
    after the plan: simulated on the chunk's own connection, so it is rolled back with it) is retryable: the
    chunk rolls back, waits for the chunk before it and is planned again, and the run goes on."""
    tenant_get_or_create("lanes")
    path = _file(
        tmp_path / "raced.jsonl",
        [{"contactId": "ld-1", "email": "one@example.com"}, {"contactId": "ld-2", "email": "two@example.com"}],
    )
    _slowed(monkeypatch, backfill_bulk, "new_contacts_write", {"ld-1"}, 0.5)
    plan_bulk = backfill_bulk.plan_bulk
    raced: list[int] = []

    def planned_then_raced(items: list) -> Any:
        steps = plan_bulk(items)
        if not raced and any(item.statement.contact_id == "ld-2" for item in items):
            raced.append(connection.connection.info.backend_pid)
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO crm_contactlink (tenant_id, profile_id, messaging_contact_id, created_at)"
                    " SELECT id, 0, 'ld-2', now() FROM crm_tenant WHERE external_id = 'lanes'"
                )
        return steps

    monkeypatch.setattr(backfill_bulk, "plan_bulk", planned_then_raced)

    result = contacts_backfill(path=path, chunk_rows=1)

    assert raced, "the second chunk was planned while the first was in flight"
    assert result.overlapped_chunks == 0
    assert result.counts == {"created": 2, "linked": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    assert ContactLink.objects.filter(messaging_contact_id__startswith="ld-").count() == 2


def test_each_lane_keeps_one_connection_for_all_its_chunks_and_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve chunks through three lanes: three backends in all (a new one per chunk would load its caches and
    prepare every statement again), none of them left connected once the import is done."""
    import crm.services.backfill_lanes as backfill_lanes

    tenant_get_or_create("lanes")
    path = _file(
        tmp_path / "twelve.jsonl", [{"contactId": f"lk-{n}", "email": f"lk{n}@example.com"} for n in range(12)]
    )
    pids: list[int] = []
    real_pid = backfill_lanes._backend_pid

    def recorded_pid() -> int:
        pid = real_pid()
        pids.append(pid)
        return pid

    monkeypatch.setattr(backfill_lanes, "_backend_pid", recorded_pid)

    result = contacts_backfill(path=path, chunk_rows=1)

    assert result.counts["created"] == 12
    assert len(pids) == 12 and len(set(pids)) == backfill_lanes.LANES
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [sorted(set(pids))])
        assert cursor.fetchone()[0] == 0
