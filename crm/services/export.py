"""The subject access export (GDPR / POPIA): everything the CRM holds about one person.

A selector: it reads only. `python manage.py export_profile` prints its result as JSON.
"""

from datetime import datetime
from typing import Any

from crm.errors import ApplicationError
from crm.models import Channel, ContactLink, Profile, Tenant
from crm.services.consent_order import consent_order_key
from crm.services.contact_points import address_kind

PROFILE_FIELDS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "email_verified",
    "phone_verified",
    "email_opt_in",
    "sms_opt_in",
    "push_opt_in",
    "whatsapp_opt_in",
    "engagement_score",
    "last_message_at",
    "last_activity_at",
    "last_email_open_at",
)


class ExportNotFound(ApplicationError):
    pass


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _value(value: Any) -> Any:
    return _iso(value) if isinstance(value, datetime) else value


def profile_export(*, tenant_external_id: str, contact_id: str) -> dict[str, Any]:
    """Everything held about the profile that `contact_id` links to within the tenant.

    Raises `ExportNotFound` for an unknown tenant, or a contactId not linked in that tenant
    (a contactId of another tenant is reported as unknown, never exported).
    """
    tenant = Tenant.objects.filter(external_id=tenant_external_id).first()
    if tenant is None:
        raise ExportNotFound(f"Unknown tenant {tenant_external_id!r}.")
    link = ContactLink.objects.filter(tenant=tenant, messaging_contact_id=contact_id).select_related("profile").first()
    if link is None:
        raise ExportNotFound(f"Unknown contact {contact_id!r} in tenant {tenant_external_id!r}.")
    profile: Profile = link.profile

    states = {state.channel: state for state in profile.consents.all()}
    consent = {}
    for channel in Channel.values:
        state = states.get(channel)
        kind = address_kind(channel)
        consent[channel] = {
            # The address the consent is for: the one the profile holds now (None for push).
            "address": (getattr(profile, kind) or None) if kind else None,
            "opted_in": state.opted_in if state else None,
            "changed_at": _iso(state.changed_at) if state else None,
            "source": (state.source or None) if state else None,
        }

    return {
        "tenant": tenant.external_id,
        "profile": {name: _value(getattr(profile, name)) for name in PROFILE_FIELDS},
        "messaging_contact_ids": sorted(profile.contact_links.values_list("messaging_contact_id", flat=True)),
        "consent": consent,
        "consent_history": [
            {
                "channel": change.channel,
                "address": change.address or None,
                "address_stated": change.address_stated,
                "messaging_contact_id": change.contact_id or None,
                "opted_in": change.opted_in,
                "occurred_at": _iso(change.occurred_at),
                "received_at": _iso(change.received_at),
                "source": change.source,
                "superseded": change.superseded,
                "lawful_basis": change.lawful_basis,
                "warning": change.warning or None,
                "recorded_at": _iso(change.recorded_at),
            }
            for change in sorted(profile.consent_changes.all(), key=consent_order_key)
        ],
        "activities": [
            {"type": activity.type, "occurred_at": _iso(activity.occurred_at), "data": activity.data}
            for activity in profile.activities.order_by("occurred_at", "id")
        ],
        "campaign_interactions": [
            {
                "message_id": interaction.message_id,
                "campaign_id": interaction.campaign_id,
                "type": interaction.type,
                "channel": interaction.channel,
                "count": interaction.count,
                "first_at": _iso(interaction.first_at),
                "last_at": _iso(interaction.last_at),
            }
            for interaction in profile.interactions.order_by("first_at", "id")
        ],
        "attribution_events": [
            {
                "campaign_id": event.campaign_id,
                "message_id": event.message_id,
                "link_id": event.link_id,
                "link_url": event.link_url,
                "utm_source": event.utm_source,
                "utm_medium": event.utm_medium,
                "utm_campaign": event.utm_campaign,
                "utm_term": event.utm_term,
                "utm_content": event.utm_content,
                "occurred_at": _iso(event.occurred_at),
            }
            for event in profile.attributions.order_by("occurred_at", "id")
        ],
        "segments": sorted(profile.segments.values_list("name", flat=True)),
    }
