"""Rows for admin tests, made directly with the ORM (not through events)."""

from datetime import UTC, datetime, timedelta
from itertools import count

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from crm.models import (
    Activity,
    ActivityType,
    AttributionEvent,
    CampaignInteraction,
    ConsentChange,
    ConsentSource,
    ContactLink,
    HardBounce,
    MarketingConsent,
    PendingScoreRefresh,
    Profile,
    Segment,
    SegmentMembership,
    Tenant,
)
from messaging_events.models import InboundEvent, InboundEventStatus

BASE_TIME = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_seq = count(1)


def make_tenant(external_id: str, name: str) -> Tenant:
    return Tenant.objects.create(external_id=external_id, name=name)


def make_inbound_event(
    tenant: Tenant | None,
    *,
    event_type: str = "contact.created",
    status: str = InboundEventStatus.APPLIED,
    contact_id: str = "",
    raw_data: object = None,
    error: str = "",
    priority: str = "normal",
) -> InboundEvent:
    n = next(_seq)
    return InboundEvent.objects.create(
        tenant=tenant,
        tenant_ref=tenant.external_id if tenant else "",
        idempotency_key=f"evt-{n}",
        event_type=event_type,
        priority=priority,
        messaging_contact_id=contact_id,
        job_name=event_type,
        bullmq_job_id=str(n),
        raw_data=raw_data
        if raw_data is not None
        else {"contactId": contact_id, "tenantId": getattr(tenant, "external_id", "")},
        occurred_at=BASE_TIME,
        job_timestamp=BASE_TIME,
        status=status,
        error=error,
    )


def make_person(tenant: Tenant, *, first: str, last: str, email: str, phone: str, contact_id: str) -> Profile:
    """A profile with one of every related record, all in `tenant`. Markers are its name, email and contactId."""
    profile = Profile.objects.create(
        tenant=tenant,
        first_name=first,
        last_name=last,
        email=email,
        phone=phone,
        email_verified=True,
        email_opt_in=True,
        engagement_score=42.5,
        engagement_breakdown={"EMAIL_OPENED": 30.0, "EMAIL_CLICKED": 12.5},
        last_activity_at=BASE_TIME,
    )
    ContactLink.objects.create(tenant=tenant, profile=profile, messaging_contact_id=contact_id)
    event = make_inbound_event(tenant, contact_id=contact_id, raw_data={"contactId": contact_id, "email": email})
    Activity.objects.create(
        tenant=tenant,
        profile=profile,
        type=ActivityType.EMAIL_OPENED,
        occurred_at=BASE_TIME,
        data={"messageId": f"msg-{contact_id}", "note": f"opened by {email}"},
        source_event=event,
    )
    change = ConsentChange.objects.create(
        tenant=tenant,
        profile=profile,
        channel="email",
        opted_in=True,
        occurred_at=BASE_TIME - timedelta(days=1),
        source=ConsentSource.MESSAGING_EVENT,
        source_event=event,
        tiebreak=f"messaging_event:{event.idempotency_key}",
        lawful_basis="consent",
        address=email,
        contact_id=contact_id,
    )
    MarketingConsent.objects.create(
        tenant=tenant,
        profile=profile,
        channel="email",
        opted_in=True,
        changed_at=change.occurred_at,
        source=ConsentSource.MESSAGING_EVENT,
        deciding_change=change,
        address=email,
    )
    CampaignInteraction.objects.create(
        tenant=tenant,
        profile=profile,
        message_id=f"msg-{contact_id}",
        type="OPENED",
        campaign_id=f"camp-{contact_id}",
        channel="email",
        count=2,
        first_at=BASE_TIME,
        last_at=BASE_TIME + timedelta(hours=1),
    )
    AttributionEvent.objects.create(
        tenant=tenant,
        profile=profile,
        campaign_id=f"camp-{contact_id}",
        message_id=f"msg-{contact_id}",
        link_id="l1",
        link_url=f"https://example.com/?utm_source=news&for={contact_id}",
        utm_source="news",
        utm_campaign=f"spring-{contact_id}",
        occurred_at=BASE_TIME,
    )
    segment = Segment.objects.create(tenant=tenant, name=f"Openers of {tenant.name}")
    SegmentMembership.objects.create(tenant=tenant, segment=segment, profile=profile)
    HardBounce.objects.create(tenant=tenant, profile=profile, message_id=f"bounce-{contact_id}", occurred_at=BASE_TIME)
    PendingScoreRefresh.objects.create(profile=profile)
    return profile


def make_staff(username: str, tenants: list[Tenant], *, perms: tuple[str, ...] = ("view", "change")):
    """A staff (non-superuser) member of `tenants` with the given permissions on every CRM and inbox model."""
    user = get_user_model().objects.create_user(username=username, password="pw", is_staff=True)
    codename_prefixes = tuple(f"{p}_" for p in perms)
    permissions = [
        p
        for p in Permission.objects.filter(content_type__app_label__in=("crm", "messaging_events"))
        if p.codename.startswith(codename_prefixes)
    ]
    user.user_permissions.set(permissions)
    for tenant in tenants:
        tenant.staff.add(user)
    return user
