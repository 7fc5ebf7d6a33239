"""Round trips per contact event on the worker's path (`batch_apply.apply_batch`, inside the real claim
transaction): `contact.created` and `contactPreference.updated` are most of the workers' CPU once the
message events are set-based (docs/performance.md). The counts are exact, so that a regression fails.

A transactional test, so that the claim's `atomic()` is the outermost transaction as in the worker
(Django logs its BEGIN and COMMIT as queries). The handler runs without a savepoint of its own: a
handler that raises rolls the event's transaction back as a whole (`inbox.process_job`)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm.models import ConsentChange, MarketingConsent, Profile, Segment
from messaging_events.models import InboundEvent
from messaging_events.services import batch_apply
from tests.factories import at, contact_created_job, contact_preference_updated_job

pytestmark = pytest.mark.django_db(transaction=True)


def _queries_of(job: dict) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        result = batch_apply.apply_batch([job])
    assert result.statuses == {"applied": 1}
    return [query["sql"] for query in captured.captured_queries]


def _warm_tenant() -> None:
    """The tenant exists and has segments (as in production), and a contact was already applied."""
    contact_created_job_applied(contact_id="c-warm", email="warm@example.com", phone="+27820000000")
    tenant_id = Profile.objects.get().tenant_id
    Segment.objects.create(tenant_id=tenant_id, name="email", required_consent_channel="email")
    Segment.objects.create(tenant_id=tenant_id, name="sms", required_consent_channel="sms")


def contact_created_job_applied(**kwargs) -> None:
    assert batch_apply.apply_batch([contact_created_job(**kwargs, timestamp=at(-60))]).statuses == {"applied": 1}


def _show(label: str, queries: list[str]) -> None:
    print(f"\n{label}: {len(queries)} queries")
    for n, sql in enumerate(queries, 1):
        print(f"{n:3d} {sql[:300]}")


def test_a_plain_sign_up() -> None:
    _warm_tenant()
    queries = _queries_of(contact_created_job(contact_id="c-1", event_id="e-1", email="a@example.com"))
    _show("plain sign-up", queries)
    assert Profile.objects.filter(email="a@example.com", is_stub=False).count() == 1
    # BEGIN, claim, identity locks, one resolution (tenant, link, email and phone candidates), profile
    # insert with its fields, link, contact addresses, close the row, COMMIT (was 17, then 11)
    assert len(queries) == 9


def test_a_sign_up_with_email_and_sms_opt_ins() -> None:
    _warm_tenant()
    job = contact_created_job(
        contact_id="c-1", event_id="e-1", email="a@example.com", email_opt_in=True, sms_opt_in=True
    )
    queries = _queries_of(job)
    _show("sign-up with emailOptIn and smsOptIn", queries)
    profile = Profile.objects.get(email="a@example.com")
    assert (profile.email_opt_in, profile.sms_opt_in) == (True, True)
    assert profile.segment_memberships.count() == 2
    # the plain sign-up's 9, then one statement: ledger, consent states, flags, activities (both channels)
    # and the memberships the new flags call for (was 37; 33 in a tenant without segments; then 17)
    assert len(queries) == 10


def test_a_preference_change() -> None:
    _warm_tenant()
    contact_created_job_applied(contact_id="c-1", email="a@example.com", email_opt_in=True, sms_opt_in=True)
    job = contact_preference_updated_job(contact_id="c-1", event_id="p-1", email_opt_in=False, timestamp=at(5))
    queries = _queries_of(job)
    _show("contactPreference.updated (email opt-out)", queries)
    profile = Profile.objects.get(email="a@example.com")
    assert (profile.email_opt_in, profile.sms_opt_in) == (False, True)
    assert MarketingConsent.objects.get(profile=profile, channel="email").opted_in is False
    assert ConsentChange.objects.filter(profile=profile).count() == 3
    assert InboundEvent.objects.filter(status="applied").count() == 3
    # BEGIN, claim, identity lock, resolution, profile lock and read, the contact's address history with
    # the consent states in force, then one statement: ledger, state, flag, activity and the membership
    # removed; close the row, COMMIT (was 22, then 17, then 16)
    assert len(queries) == 9
