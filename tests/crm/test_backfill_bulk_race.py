"""A live worker that links a contact between the bulk path's planning and its writes: the chunk's
transaction is rolled back and the chunk planned again (`backfill.RETRYABLE_SQLSTATES`), not the run stopped."""

from pathlib import Path

import pytest
from django.db import connection

import crm.services.backfill_bulk as backfill_bulk
from crm.models import ContactLink, Profile
from messaging_events.contact_export import contacts_backfill
from tests.ops.contact_files import write_jsonl


@pytest.mark.django_db
def test_a_link_made_after_planning_retries_the_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "contacts.jsonl"
    write_jsonl(path, 20, bad_every=0)
    plan_bulk = backfill_bulk.plan_bulk
    plans = []

    def planned_then_raced(items):
        steps = plan_bulk(items)
        if not plans:  # what a worker committing a link for the first "new" contact right now looks like
            first = next(item.statement for item in items if item.disposition == "new")
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO crm_tenant (external_id, name, created_at) VALUES (%s, '', now())"
                    " ON CONFLICT (external_id) DO NOTHING",
                    [first.tenant_external_id],
                )
                cursor.execute(
                    "INSERT INTO crm_contactlink (tenant_id, profile_id, messaging_contact_id, created_at)"
                    " SELECT id, 0, %s, now() FROM crm_tenant WHERE external_id = %s",
                    [first.contact_id, first.tenant_external_id],
                )
        plans.append(len(items))
        return steps

    monkeypatch.setattr(backfill_bulk, "plan_bulk", planned_then_raced)
    result = contacts_backfill(path=path, chunk_rows=50)

    assert plans == [20, 20]  # the unique violation rolled the chunk back, and it was planned again
    assert result.counts == {"created": 20, "linked": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    assert Profile.objects.count() == 20
    assert ContactLink.objects.count() == 20 and not ContactLink.objects.filter(profile_id=0).exists()
