"""contact_statement_apply with contact.created statements, the one path for contact.created and the
backfill: outcomes, idempotency, validation."""

import pytest
from django.db import transaction

from crm.errors import ApplicationError
from crm.models import ConsentChange, ContactLink, Profile, Tenant
from crm.services.contacts import ContactEventKind, ContactImportOutcome, ContactStatement, contact_statement_apply
from tests.factories import at

pytestmark = pytest.mark.django_db


def _import(contact_id: str = "c1", **overrides):
    kwargs = {
        "tenant_external_id": "acme",
        "contact_id": contact_id,
        "email": "a@example.com",
        "phone": "082 111 0001",
        "first_name": "Ann",
        "last_name": "Smith",
        "opt_ins": {"email": True},
        "occurred_at": at(0),
        "source_key": f"row-{contact_id}",
    }
    kwargs.update(overrides)
    return contact_statement_apply(ContactStatement(kind=ContactEventKind.CREATED, **kwargs))


def _sms_opt_in_statement(contact_id: str) -> None:
    """A contactPreference.updated opting in to SMS: a stub profile, when the contact is not yet known."""
    contact_statement_apply(
        ContactStatement(
            kind=ContactEventKind.PREFERENCES,
            tenant_external_id="acme",
            contact_id=contact_id,
            opt_ins={"sms": True},
            occurred_at=at(1),
            source_key="p",
        )
    )


def test_outcomes() -> None:
    first = _import()
    assert first.outcome == ContactImportOutcome.CREATED
    assert (first.tenant_id, first.profile_id) == (Tenant.objects.get().pk, Profile.objects.get().pk)
    assert _import().outcome == ContactImportOutcome.UNCHANGED
    assert _import(source_key="row-again", opt_ins={"sms": False}).outcome == ContactImportOutcome.UPDATED
    linked = _import("c2", email="A@Example.com", phone=None)
    assert linked.outcome == ContactImportOutcome.LINKED and linked.profile_id == first.profile_id
    assert Profile.objects.get().phone == "+27821110001"
    assert ConsentChange.objects.count() == 3


def test_stub_merge_reports_linked() -> None:
    _import("c1")
    _sms_opt_in_statement("c2")
    assert Profile.objects.count() == 2
    result = _import("c2", phone=None, opt_ins={})
    assert result.outcome == ContactImportOutcome.LINKED and result.merged_profile_id is not None
    assert Profile.objects.count() == 1
    # c2 states no phone, so its SMS opt-in is about no number: recorded, not c1's phone's consent.
    assert Profile.objects.get().sms_opt_in is None
    assert ConsentChange.objects.get(channel="sms").address == ""


def test_stub_becoming_real_reports_created() -> None:
    _sms_opt_in_statement("c1")
    result = _import("c1")
    assert result.outcome == ContactImportOutcome.CREATED
    assert not Profile.objects.get().is_stub


def test_invalid_values_are_refused_and_leave_nothing() -> None:
    for bad in ({"email": "not-an-email"}, {"phone": "12345"}):
        with pytest.raises(ApplicationError), transaction.atomic():
            _import(**bad)
    assert not ContactLink.objects.exists()


@pytest.mark.parametrize(
    ("kind", "stated", "message"),
    [
        (ContactEventKind.UPDATED, {"opt_ins": {"email": False}}, "never decides it"),
        (ContactEventKind.CREATED, {"reported_opt_ins": {"email": False}}, "only contact.updated reports"),
        (ContactEventKind.PREFERENCES, {"email": "a@example.com"}, "states consent only"),
    ],
)
def test_a_statement_its_event_cannot_make_is_refused(kind: ContactEventKind, stated: dict, message: str) -> None:
    """contact.updated never decides consent (an opt-out must not be undone by a routine snapshot)."""
    with pytest.raises(ValueError, match=message):
        ContactStatement(
            kind=kind, tenant_external_id="acme", contact_id="c1", occurred_at=at(0), source_key="k", **stated
        )
    assert Profile.objects.count() == 0
