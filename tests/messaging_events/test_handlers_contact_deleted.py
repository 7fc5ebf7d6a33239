"""contact.deleted: currently ignored by the CRM consumer."""

import pytest

from crm.models import Activity, ContactLink, Profile
from messaging_events.models import InboundEvent
from tests.factories import contact_created_job, contact_deleted_job, process

pytestmark = pytest.mark.django_db


def test_is_recorded_as_ignored_and_changes_nothing() -> None:
    process(contact_created_job(email_opt_in=True))
    before = (Profile.objects.count(), ContactLink.objects.count(), Activity.objects.count())
    assert process(contact_deleted_job(event_id="evt_126")) == "ignored"
    assert (Profile.objects.count(), ContactLink.objects.count(), Activity.objects.count()) == before
    row = InboundEvent.objects.get(idempotency_key="evt_126")
    assert row.status == "ignored" and "reserved" in row.error
