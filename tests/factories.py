"""Build BullMQ jobs exactly as the bridge hands them to the workers, one builder per event type.

The shapes come from `messaging_events/streams/events.py`, which the demo and the bench use too; these
builders add a test's defaults (the seed contract's example values) and the bridged job's envelope (id,
timestamp, attempts). Every field given as None is left out, so tests can state exactly what a producer sent.
"""

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from messaging_events.contract.jobs import BridgedJob
from messaging_events.contract.routing import EventType
from messaging_events.streams import events
from messaging_events.streams.events import OptIns, StreamJob, iso

BASE_TIME = datetime(2025, 12, 14, 8, 0, tzinfo=UTC)
TENANT = "tenant_123"
_job_ids = count(1)


def at(minutes: float = 0, *, days: float = 0) -> datetime:
    """BASE_TIME plus an offset: readable times for tests."""
    return BASE_TIME + timedelta(minutes=minutes, days=days)


def make_job(name: str, data: Any, *, timestamp: datetime | None = None, job_id: str | None = None) -> BridgedJob:
    when = timestamp or BASE_TIME
    return {
        "id": job_id or str(next(_job_ids)),
        "name": name,
        "timestamp": int(when.timestamp() * 1000),
        "attemptsMade": 0,
        "data": data,
    }


def _bridged(job: StreamJob, timestamp: datetime | None = None) -> BridgedJob:
    return make_job(job["name"], job["data"], timestamp=timestamp)


# -- contact and consent events (their occurred-at is the job timestamp) --------------------


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
    job = events.contact_details(
        EventType.CONTACT_CREATED,
        tenant_id=tenant_id,
        contact_id=contact_id,
        event_id=event_id,
        email=email,
        phone=phone,
        first_name=first_name,
        last_name=last_name,
        opt_ins=OptIns(email_opt_in, sms_opt_in, push_opt_in, whatsapp_opt_in),
    )
    return _bridged(job, timestamp)


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
    job = events.contact_details(
        EventType.CONTACT_UPDATED,
        tenant_id=tenant_id,
        contact_id=contact_id,
        event_id=event_id,
        email=email,
        phone=phone,
        first_name=first_name,
        last_name=last_name,
        opt_ins=OptIns(email_opt_in, sms_opt_in, push_opt_in, whatsapp_opt_in),
    )
    return _bridged(job, timestamp)


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
    opt_ins = OptIns(email_opt_in, sms_opt_in, push_opt_in, whatsapp_opt_in)
    job = events.contact_preference_updated(
        tenant_id=tenant_id, contact_id=contact_id, event_id=event_id, opt_ins=opt_ins
    )
    return _bridged(job, timestamp)


def contact_deleted_job(
    *,
    contact_id: str = "contact_uuid_456",
    tenant_id: str = TENANT,
    event_id: str | None = None,
    timestamp: datetime | None = None,
) -> BridgedJob:
    return _bridged(events.contact_deleted(tenant_id=tenant_id, contact_id=contact_id, event_id=event_id), timestamp)


# -- message and engagement events (their occurred-at is in the payload) --------------------


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
    job = events.message_sent(
        contact_id=contact_id,
        message_id=message_id,
        channel=channel,
        template_id=template_id,
        template_name=template_name,
        campaign_id=campaign_id,
        sent_at=iso(sent_at),
        tenant_id=tenant_id,
        event_id=event_id,
    )
    return _bridged(job)


def message_delivered_job(
    *,
    contact_id: str = "contact_uuid_456",
    message_id: str = "msg_789",
    delivered_at: datetime = BASE_TIME + timedelta(seconds=5),
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> BridgedJob:
    job = events.message_delivered(
        contact_id=contact_id,
        message_id=message_id,
        delivered_at=iso(delivered_at),
        tenant_id=tenant_id,
        event_id=event_id,
    )
    return _bridged(job)


def message_failed_job(
    *,
    contact_id: str = "contact_uuid_456",
    message_id: str = "msg_789",
    reason: str | None = "invalid_email",
    failed_at: datetime = BASE_TIME + timedelta(seconds=5),
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> BridgedJob:
    job = events.message_failed(
        contact_id=contact_id,
        message_id=message_id,
        reason=reason,
        failed_at=iso(failed_at),
        tenant_id=tenant_id,
        event_id=event_id,
    )
    return _bridged(job)


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
    job = events.message_bounced(
        contact_id=contact_id,
        message_id=message_id,
        bounce_type=bounce_type,
        reason=reason,
        bounced_at=iso(bounced_at),
        tenant_id=tenant_id,
        event_id=event_id,
    )
    return _bridged(job)


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
    job = events.email_opened(
        contact_id=contact_id,
        message_id=message_id,
        campaign_id=campaign_id,
        opened_at=iso(opened_at),
        device_type=device_type,
        user_agent=user_agent,
        tenant_id=tenant_id,
        event_id=event_id,
    )
    return _bridged(job)


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
    job = events.email_clicked(
        contact_id=contact_id,
        message_id=message_id,
        campaign_id=campaign_id,
        link_id=link_id,
        link_url=link_url,
        clicked_at=iso(clicked_at),
        tenant_id=tenant_id,
        event_id=event_id,
    )
    return _bridged(job)


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
    job = events.sms_replied(
        contact_id=contact_id,
        original_message_id=original_message_id,
        reply_text=reply_text,
        replied_at=iso(replied_at),
        tenant_id=tenant_id,
        event_id=event_id,
    )
    return _bridged(job, timestamp or replied_at)  # received when sent, unless a test says otherwise


def process(job: BridgedJob) -> str:
    """Run one job through the real inbox path; returns the inbox status."""
    from messaging_events.services.inbox import process_job

    status, _ = process_job(job)
    return str(status)
