"""Build BullMQ jobs exactly as the bridge hands them to the workers, one builder per event type.

The shapes come from `messaging_events/streams/events.py`, which the demo and the bench use too; these
builders add a test's defaults (the seed contract's example values) and the bridged job's envelope (id,
timestamp, attempts). Every field given as None is left out, so tests can state exactly what a producer sent;
times may be datetimes.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from messaging_events.contract.jobs import BridgedJob
from messaging_events.contract.routing import EventType
from messaging_events.streams import events
from messaging_events.streams.events import StreamJob

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


JobBuilder = Callable[..., BridgedJob]


def _builder(event_type: EventType, **defaults: Any) -> JobBuilder:
    """A job builder for the type with the test's defaults: keywords as in `events.PAYLOAD_FIELDS`, plus
    `contact_id`, `tenant_id`, `event_id` and `timestamp` (the job's, default BASE_TIME)."""

    def build(*, timestamp: datetime | None = None, **fields: Any) -> BridgedJob:
        return _bridged(events.job(event_type, **{**defaults, **fields}), timestamp)

    build.__name__ = build.__qualname__ = f"{event_type.value}_job"
    return build


CONTACT = {"contact_id": "contact_uuid_456"}
MESSAGE = {**CONTACT, "message_id": "msg_789"}
CAMPAIGN = {"campaign_id": "campaign_dec_2025"}

# -- contact and consent events (their occurred-at is the job timestamp) --------------------
contact_created_job = _builder(
    EventType.CONTACT_CREATED,
    **CONTACT,
    tenant_id=TENANT,
    email="john@example.com",
    phone="+27821234567",
    first_name="John",
    last_name="Smith",
)
contact_updated_job = _builder(EventType.CONTACT_UPDATED, **CONTACT, tenant_id=TENANT)
contact_preference_updated_job = _builder(EventType.CONTACT_PREFERENCE_UPDATED, **CONTACT, tenant_id=TENANT)
contact_deleted_job = _builder(EventType.CONTACT_DELETED, **CONTACT, tenant_id=TENANT)

# -- message and engagement events (their occurred-at is in the payload) --------------------
message_sent_job = _builder(
    EventType.MESSAGE_SENT,
    **MESSAGE,
    **CAMPAIGN,
    channel="EMAIL",
    template_id="template_123",
    template_name="December Newsletter",
    sent_at=BASE_TIME,
)
message_delivered_job = _builder(EventType.MESSAGE_DELIVERED, **MESSAGE, delivered_at=BASE_TIME + timedelta(seconds=5))
message_failed_job = _builder(
    EventType.MESSAGE_FAILED, **MESSAGE, reason="invalid_email", failed_at=BASE_TIME + timedelta(seconds=5)
)
message_bounced_job = _builder(
    EventType.MESSAGE_BOUNCED,
    **MESSAGE,
    bounce_type="hard",
    reason="mailbox_not_found",
    bounced_at=BASE_TIME + timedelta(seconds=10),
)
email_opened_job = _builder(
    EventType.EMAIL_OPENED,
    **MESSAGE,
    **CAMPAIGN,
    opened_at=BASE_TIME + timedelta(hours=1, minutes=15),
    device_type="mobile",
    user_agent="Mozilla/5.0",
)
email_clicked_job = _builder(
    EventType.EMAIL_CLICKED,
    **MESSAGE,
    **CAMPAIGN,
    link_id="link_123",
    link_url="https://example.com/offer",
    clicked_at=BASE_TIME + timedelta(hours=1, minutes=16, seconds=30),
)
_sms_replied = _builder(
    EventType.SMS_REPLIED, **CONTACT, original_message_id="msg_789", reply_text="Yes, I'm interested"
)


def sms_replied_job(
    *, replied_at: datetime = BASE_TIME + timedelta(hours=2), timestamp: datetime | None = None, **fields: Any
) -> BridgedJob:
    # Received when sent, unless a test says otherwise.
    return _sms_replied(replied_at=replied_at, timestamp=timestamp or replied_at, **fields)


def process(job: BridgedJob) -> str:
    """Run one job through the real inbox path; returns the inbox status."""
    from messaging_events.services.inbox import process_job

    status, _ = process_job(job)
    return str(status)
