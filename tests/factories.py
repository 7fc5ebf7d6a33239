"""Build BullMQ jobs exactly as the bridge hands them to the workers, one builder per event type.

Contact and consent jobs carry `data={"payload": {...}}`; message and engagement jobs carry
`data={"type": ..., "identity": {"messagingContactId": ...}, "payload": {...}}`. Every builder
leaves out the fields given as None, so tests can state exactly what a producer sent.
"""

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from messaging_events.contract.jobs import BridgedJob

BASE_TIME = datetime(2025, 12, 14, 8, 0, tzinfo=UTC)
TENANT = "tenant_123"
_job_ids = count(1)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def at(minutes: float = 0, *, days: float = 0) -> datetime:
    """BASE_TIME plus an offset: readable times for tests."""
    return BASE_TIME + timedelta(minutes=minutes, days=days)


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def make_job(name: str, data: Any, *, timestamp: datetime | None = None, job_id: str | None = None) -> BridgedJob:
    when = timestamp or BASE_TIME
    return {
        "id": job_id or str(next(_job_ids)),
        "name": name,
        "timestamp": int(when.timestamp() * 1000),
        "attemptsMade": 0,
        "data": data,
    }


# -- contact and consent events (their occurred-at is the job timestamp) --------------------


def _contact_job(name: str, payload: dict[str, Any], timestamp: datetime | None) -> BridgedJob:
    return make_job(name, {"payload": _clean(payload)}, timestamp=timestamp)


def contact_created_job(
    *,
    contact_id: str = "contact_uuid_456",
    tenant_id: str = TENANT,
    event_id: str | None = None,
    email: str | None = "john@example.com",
    phone: str | None = "+27821234567",
    first_name: str | None = "John",
    last_name: str | None = "Smith",
    email_opt_in: bool | None = None,
    sms_opt_in: bool | None = None,
    push_opt_in: bool | None = None,
    whatsapp_opt_in: bool | None = None,
    timestamp: datetime | None = None,
) -> BridgedJob:
    return _contact_job(
        "contact.created",
        {
            "eventId": event_id,
            "tenantId": tenant_id,
            "contactId": contact_id,
            "email": email,
            "phoneNumber": phone,
            "firstName": first_name,
            "lastName": last_name,
            "emailOptIn": email_opt_in,
            "smsOptIn": sms_opt_in,
            "pushOptIn": push_opt_in,
            "whatsappOptIn": whatsapp_opt_in,
        },
        timestamp,
    )


def contact_updated_job(
    *,
    contact_id: str = "contact_uuid_456",
    tenant_id: str = TENANT,
    event_id: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    email_opt_in: bool | None = None,
    sms_opt_in: bool | None = None,
    push_opt_in: bool | None = None,
    whatsapp_opt_in: bool | None = None,
    timestamp: datetime | None = None,
) -> BridgedJob:
    return _contact_job(
        "contact.updated",
        {
            "eventId": event_id,
            "tenantId": tenant_id,
            "contactId": contact_id,
            "email": email,
            "phoneNumber": phone,
            "firstName": first_name,
            "lastName": last_name,
            "emailOptIn": email_opt_in,
            "smsOptIn": sms_opt_in,
            "pushOptIn": push_opt_in,
            "whatsappOptIn": whatsapp_opt_in,
        },
        timestamp,
    )


def contact_preference_updated_job(
    *,
    contact_id: str = "contact_uuid_456",
    tenant_id: str = TENANT,
    event_id: str | None = None,
    email_opt_in: bool | None = None,
    sms_opt_in: bool | None = None,
    push_opt_in: bool | None = None,
    whatsapp_opt_in: bool | None = None,
    timestamp: datetime | None = None,
) -> BridgedJob:
    return _contact_job(
        "contactPreference.updated",
        {
            "eventId": event_id,
            "tenantId": tenant_id,
            "contactId": contact_id,
            "emailOptIn": email_opt_in,
            "smsOptIn": sms_opt_in,
            "pushOptIn": push_opt_in,
            "whatsappOptIn": whatsapp_opt_in,
        },
        timestamp,
    )


def contact_deleted_job(
    *,
    contact_id: str = "contact_uuid_456",
    tenant_id: str = TENANT,
    event_id: str | None = None,
    timestamp: datetime | None = None,
) -> BridgedJob:
    return _contact_job(
        "contact.deleted", {"eventId": event_id, "tenantId": tenant_id, "contactId": contact_id}, timestamp
    )


# -- message and engagement events (their occurred-at is in the payload) --------------------


def message_job(
    name: str,
    *,
    contact_id: str,
    payload: dict[str, Any],
    tenant_id: str | None = None,
    event_id: str | None = None,
    timestamp: datetime | None = None,
) -> BridgedJob:
    data: dict[str, Any] = {
        "type": name,
        "identity": {"messagingContactId": contact_id},
        "payload": _clean({"eventId": event_id, **payload}),
    }
    if tenant_id is not None:
        data["tenantId"] = tenant_id
    return make_job(name, data, timestamp=timestamp)


def message_sent_job(
    *,
    contact_id: str = "contact_uuid_456",
    message_id: str = "msg_789",
    channel: str = "EMAIL",
    template_id: str | None = "template_123",
    template_name: str | None = "December Newsletter",
    campaign_id: str | None = "campaign_dec_2025",
    sent_at: datetime = BASE_TIME,
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> BridgedJob:
    return message_job(
        "message.sent",
        contact_id=contact_id,
        tenant_id=tenant_id,
        event_id=event_id,
        payload={
            "messageId": message_id,
            "contactId": contact_id,
            "channel": channel,
            "templateId": template_id,
            "templateName": template_name,
            "campaignId": campaign_id,
            "sentAt": iso(sent_at),
        },
    )


def message_delivered_job(
    *,
    contact_id: str = "contact_uuid_456",
    message_id: str = "msg_789",
    delivered_at: datetime = BASE_TIME + timedelta(seconds=5),
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> BridgedJob:
    return message_job(
        "message.delivered",
        contact_id=contact_id,
        tenant_id=tenant_id,
        event_id=event_id,
        payload={"messageId": message_id, "deliveredAt": iso(delivered_at)},
    )


def message_failed_job(
    *,
    contact_id: str = "contact_uuid_456",
    message_id: str = "msg_789",
    reason: str | None = "invalid_email",
    failed_at: datetime = BASE_TIME + timedelta(seconds=5),
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> BridgedJob:
    return message_job(
        "message.failed",
        contact_id=contact_id,
        tenant_id=tenant_id,
        event_id=event_id,
        payload={"messageId": message_id, "reason": reason, "failedAt": iso(failed_at)},
    )


def message_bounced_job(
    *,
    contact_id: str = "contact_uuid_456",
    message_id: str = "msg_789",
    bounce_type: str = "hard",
    reason: str | None = "mailbox_not_found",
    bounced_at: datetime = BASE_TIME + timedelta(seconds=10),
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> BridgedJob:
    return message_job(
        "message.bounced",
        contact_id=contact_id,
        tenant_id=tenant_id,
        event_id=event_id,
        payload={
            "messageId": message_id,
            "bounceType": bounce_type,
            "reason": reason,
            "bouncedAt": iso(bounced_at),
        },
    )


def email_opened_job(
    *,
    contact_id: str = "contact_uuid_456",
    message_id: str = "msg_789",
    campaign_id: str | None = "campaign_dec_2025",
    opened_at: datetime = BASE_TIME + timedelta(hours=1, minutes=15),
    device_type: str | None = "mobile",
    user_agent: str | None = "Mozilla/5.0",
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> BridgedJob:
    return message_job(
        "email.opened",
        contact_id=contact_id,
        tenant_id=tenant_id,
        event_id=event_id,
        payload={
            "messageId": message_id,
            "campaignId": campaign_id,
            "openedAt": iso(opened_at),
            "deviceType": device_type,
            "userAgent": user_agent,
        },
    )


def email_clicked_job(
    *,
    contact_id: str = "contact_uuid_456",
    message_id: str = "msg_789",
    campaign_id: str | None = "campaign_dec_2025",
    link_id: str | None = "link_123",
    link_url: str | None = "https://example.com/offer",
    clicked_at: datetime = BASE_TIME + timedelta(hours=1, minutes=16, seconds=30),
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> BridgedJob:
    return message_job(
        "email.clicked",
        contact_id=contact_id,
        tenant_id=tenant_id,
        event_id=event_id,
        payload={
            "messageId": message_id,
            "campaignId": campaign_id,
            "linkId": link_id,
            "linkUrl": link_url,
            "clickedAt": iso(clicked_at),
        },
    )


def sms_replied_job(
    *,
    contact_id: str = "contact_uuid_456",
    original_message_id: str | None = "msg_789",
    reply_text: str = "Yes, I'm interested",
    replied_at: datetime = BASE_TIME + timedelta(hours=2),
    tenant_id: str | None = None,
    event_id: str | None = None,
    timestamp: datetime | None = None,
) -> BridgedJob:
    return message_job(
        "sms.replied",
        contact_id=contact_id,
        tenant_id=tenant_id,
        event_id=event_id,
        payload={"originalMessageId": original_message_id, "replyText": reply_text, "repliedAt": iso(replied_at)},
        timestamp=timestamp or replied_at,  # received when sent, unless a test says otherwise
    )


def process(job: BridgedJob) -> str:
    """Run one job through the real inbox path; returns the inbox status."""
    from messaging_events.services.inbox import process_job

    status, _ = process_job(job)
    return str(status)
