"""The seed's example events as BullMQ jobs (`{"name", "data"}`): its payloads written out as the seed shows
them, in the envelopes of `messaging_events/streams/events.py`. Payloads are sent as given, nulls included."""

from typing import Any

from messaging_events.streams import events
from messaging_events.streams.events import StreamJob

TENANT = "tenant_123"
CONTACT = "contact_uuid_456"


def contact_payloads(tenant: str = TENANT, contact: str = CONTACT, prefix: str = "evt") -> dict[str, dict[str, Any]]:
    return {
        "contact.created": {
            "eventId": f"{prefix}_123",
            "tenantId": tenant,
            "contactId": contact,
            "email": "john@example.com",
            "phoneNumber": "+27821234567",
            "firstName": "John",
            "lastName": "Smith",
            "emailOptIn": True,
            "smsOptIn": False,
        },
        "contact.updated": {
            "eventId": f"{prefix}_124",
            "tenantId": tenant,
            "contactId": contact,
            "email": "john@example.com",
            "phoneNumber": "+27821234567",
            "firstName": "Jonathan",
            "lastName": "Smith-Jones",
            "emailOptIn": True,
            "smsOptIn": False,
        },
        "contactPreference.updated": {
            "eventId": f"{prefix}_125",
            "tenantId": tenant,
            "contactId": contact,
            "smsOptIn": True,
        },
        "contact.deleted": {"eventId": f"{prefix}_126", "tenantId": tenant, "contactId": contact},
    }


def message_payloads(contact: str = CONTACT, message: str = "msg_789") -> dict[str, dict[str, Any]]:
    return {
        "message.sent": {
            "messageId": message,
            "contactId": contact,
            "channel": "EMAIL",
            "templateId": "template_123",
            "templateName": "December Newsletter",
            "campaignId": "campaign_dec_2025",
            "sentAt": "2025-12-14T08:00:00Z",
        },
        "message.delivered": {"messageId": message, "deliveredAt": "2025-12-14T08:00:05Z"},
        "message.failed": {"messageId": message, "reason": "invalid_email", "failedAt": "2025-12-14T08:00:05Z"},
        "message.bounced": {
            "messageId": message,
            "bounceType": "hard",
            "reason": "mailbox_not_found",
            "bouncedAt": "2025-12-14T08:00:10Z",
        },
        "email.opened": {
            "messageId": message,
            "campaignId": "campaign_dec_2025",
            "openedAt": "2025-12-14T09:15:00Z",
            "deviceType": "mobile",
            "userAgent": "...",
        },
        "email.clicked": {
            "messageId": message,
            "campaignId": "campaign_dec_2025",
            "linkId": "link_123",
            "linkUrl": "https://example.com/offer",
            "clickedAt": "2025-12-14T09:16:30Z",
        },
        "sms.replied": {
            "originalMessageId": message,
            "replyText": "Yes, I'm interested",
            "repliedAt": "2025-12-14T10:00:00Z",
        },
    }


def contact_job(name: str, payload: dict[str, Any]) -> StreamJob:
    """Contact and consent events: job name = type, `data.payload` = the flat payload, as given."""
    return events.contact_event(name, payload)


def message_job(name: str, payload: dict[str, Any], contact: str = CONTACT, tenant: str | None = None) -> StreamJob:
    """Message and engagement events: `data = {type, identity: {messagingContactId}, payload, tenantId?}`."""
    return events.message_event(name, contact_id=contact, payload=payload, tenant_id=tenant)


def seed_jobs(tenant: str = TENANT, contact: str = CONTACT, prefix: str = "evt") -> list[StreamJob]:
    """Every seed event type once, each in the shape the seed documents."""
    jobs = [contact_job(name, payload) for name, payload in contact_payloads(tenant, contact, prefix).items()]
    jobs += [message_job(name, payload, contact) for name, payload in message_payloads(contact).items()]
    return jobs
