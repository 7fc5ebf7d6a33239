"""Every recorded event that names a tenant, or whose contact's link decides one, is stored with it."""

import pytest

from crm.models import Tenant
from messaging_events.models import InboundEvent
from tests.factories import TENANT, contact_created_job, contact_deleted_job, message_bounced_job, process

pytestmark = pytest.mark.django_db


def test_contact_deleted_is_recorded_under_its_tenant() -> None:
    tenant = Tenant.objects.create(external_id=TENANT)
    assert process(contact_deleted_job(event_id="del-1")) == "ignored"
    assert InboundEvent.objects.get().tenant == tenant


def test_contact_deleted_naming_an_unknown_tenant_never_creates_one() -> None:
    assert process(contact_deleted_job(event_id="del-2", tenant_id="t-nobody")) == "ignored"
    assert InboundEvent.objects.get().tenant is None
    assert not Tenant.objects.exists()


def test_a_rejection_naming_no_tenant_is_visible_to_its_linked_contacts_tenant() -> None:
    process(contact_created_job(event_id="c-1"))
    bad = message_bounced_job(event_id="bad-1", bounce_type="medium")
    assert process(bad) == "rejected"
    assert InboundEvent.objects.get(idempotency_key="bad-1").tenant == Tenant.objects.get(external_id=TENANT)


def test_a_rejection_naming_a_known_tenant_is_stored_with_it_and_never_creates_one() -> None:
    process(contact_created_job(event_id="c-1"))
    known = message_bounced_job(event_id="bad-2", bounce_type="medium", tenant_id=TENANT)
    unknown = message_bounced_job(event_id="bad-3", bounce_type="medium", tenant_id="t-nobody")
    assert process(known) == process(unknown) == "rejected"
    assert InboundEvent.objects.get(idempotency_key="bad-2").tenant.external_id == TENANT
    assert InboundEvent.objects.get(idempotency_key="bad-3").tenant is None
    assert not Tenant.objects.filter(external_id="t-nobody").exists()
