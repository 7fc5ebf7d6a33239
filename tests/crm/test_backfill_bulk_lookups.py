"""The bulk path's email and phone lookups find a tenant's profiles, and only that tenant's, whether its chunk
names a few tenants (one lookup each) or more than `_TENANTS_APART` (one lookup for them all)."""

from datetime import UTC, datetime

import pytest

from crm.services import backfill_bulk
from crm.services.backfill_bulk import contacts_unknown
from crm.services.contacts import ContactEventKind, ContactStatement, contact_statement_apply

AT = datetime(2024, 3, 1, tzinfo=UTC)


def _statement(tenant: int, contact: str, *, email: str | None = None, phone: str | None = None) -> ContactStatement:
    return ContactStatement(
        kind=ContactEventKind.CREATED,
        tenant_external_id=f"lookup-{tenant}",
        contact_id=contact,
        occurred_at=AT,
        source_key=f"backfill:{contact}",
        email=email,
        phone=phone,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("tenants", [3, backfill_bulk._TENANTS_APART + 4])
def test_an_email_or_phone_is_known_only_in_its_own_tenant(tenants: int) -> None:
    for t in range(tenants):
        contact_statement_apply(_statement(t, f"live-{t}", email=f"p{t}@example.com", phone=f"+278255501{t:02d}"))
    rows, expected = [], []
    for t in range(tenants):
        other = (t + 1) % tenants
        rows += [
            _statement(t, f"a-{t}", email=f"p{t}@example.com"),  # its tenant's email
            _statement(t, f"b-{t}", phone=f"+278255501{t:02d}"),  # its tenant's phone
            _statement(t, f"c-{t}", email=f"p{other}@example.com"),  # another tenant's email
            _statement(t, f"d-{t}", phone=f"+278255501{other:02d}"),  # another tenant's phone
            _statement(t, f"e-{t}", email=f"new{t}@example.com", phone=f"+278255599{t:02d}"),  # nobody's
        ]
        expected += [False, False, True, True, True]

    assert contacts_unknown(rows) == expected
