"""The shape of every job the Messaging service publishes (the seed contract), and one builder for them all.

`PAYLOAD_FIELDS` is the one place that lists each event type's payload: its fields, in the producer's
order, each under the keyword a caller uses (`message_id=` for `messageId`). `job(event_type, ...)` builds
`{"name", "data"}` in one of the two shapes:

- contact and consent events: `data = {"payload": {eventId, tenantId, contactId, ...}}`; they carry no time
  of their own (the job's timestamp is when they happened);
- message and engagement events: `data = {"type", "identity": {"messagingContactId"}, "payload"}`, and a
  top-level `tenantId` only when given (the seed's producer mostly leaves it out: the contact link decides).

A field given as None is left out, so a caller states exactly what a producer sent; an unknown keyword is
an error. A time given as a datetime is written by `iso`; one given as text is sent as it is, so a stream
chooses its precision and a test may send a bad one.
"""

from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from messaging_events.contract.routing import EventType

OptInChannel = Literal["email", "sms", "push", "whatsapp"]
OPT_IN_CHANNELS: tuple[OptInChannel, ...] = ("email", "sms", "push", "whatsapp")
FieldValue = str | bool | datetime | None


class StreamJob(TypedDict):
    name: str
    data: dict[str, Any]


_IDS = {"event_id": "eventId", "tenant_id": "tenantId", "contact_id": "contactId"}
_OPT_INS = {f"{channel}_opt_in": f"{channel}OptIn" for channel in OPT_IN_CHANNELS}
_DETAILS = {"email": "email", "phone": "phoneNumber", "first_name": "firstName", "last_name": "lastName"}
CONTACT_EVENTS = frozenset(
    {
        EventType.CONTACT_CREATED,
        EventType.CONTACT_UPDATED,
        EventType.CONTACT_PREFERENCE_UPDATED,
        EventType.CONTACT_DELETED,
    }
)
PAYLOAD_FIELDS: dict[EventType, dict[str, str]] = {
    EventType.CONTACT_CREATED: {**_IDS, **_DETAILS, **_OPT_INS},
    EventType.CONTACT_UPDATED: {**_IDS, **_DETAILS, **_OPT_INS},
    EventType.CONTACT_PREFERENCE_UPDATED: {**_IDS, **_OPT_INS},
    EventType.CONTACT_DELETED: _IDS,
    # Message events: `contact_id` names the identity; only message.sent repeats it in its payload.
    EventType.MESSAGE_SENT: {
        "event_id": "eventId",
        "message_id": "messageId",
        "contact_id": "contactId",
        "channel": "channel",
        "template_id": "templateId",
        "template_name": "templateName",
        "campaign_id": "campaignId",
        "sent_at": "sentAt",
    },
    EventType.MESSAGE_DELIVERED: {"event_id": "eventId", "message_id": "messageId", "delivered_at": "deliveredAt"},
    EventType.MESSAGE_FAILED: {
        "event_id": "eventId",
        "message_id": "messageId",
        "reason": "reason",
        "failed_at": "failedAt",
    },
    EventType.MESSAGE_BOUNCED: {
        "event_id": "eventId",
        "message_id": "messageId",
        "bounce_type": "bounceType",
        "reason": "reason",
        "bounced_at": "bouncedAt",
    },
    EventType.EMAIL_OPENED: {
        "event_id": "eventId",
        "message_id": "messageId",
        "campaign_id": "campaignId",
        "opened_at": "openedAt",
        "device_type": "deviceType",
        "user_agent": "userAgent",
    },
    EventType.EMAIL_CLICKED: {
        "event_id": "eventId",
        "message_id": "messageId",
        "campaign_id": "campaignId",
        "link_id": "linkId",
        "link_url": "linkUrl",
        "clicked_at": "clickedAt",
    },
    EventType.SMS_REPLIED: {
        "event_id": "eventId",
        "original_message_id": "originalMessageId",
        "reply_text": "replyText",
        "replied_at": "repliedAt",
    },
}


def iso(moment: datetime, timespec: str = "auto") -> str:
    """ISO-8601 in UTC with a `Z`, as the Node producer writes (`timespec="milliseconds"`: `toISOString()`)."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _payload(event_type: EventType, values: dict[str, FieldValue]) -> dict[str, Any]:
    fields = PAYLOAD_FIELDS[event_type]
    unknown = set(values) - set(fields)
    if unknown:
        raise TypeError(f"{event_type.value} has no field {sorted(unknown)}; its fields: {list(fields)}")
    payload = {name: values.get(keyword) for keyword, name in fields.items()}
    return {
        name: iso(value) if isinstance(value, datetime) else value
        for name, value in payload.items()
        if value is not None
    }


def job(
    event_type: EventType,
    *,
    contact_id: str,
    tenant_id: str | None = None,
    event_id: str | None = None,
    **fields: FieldValue,
) -> StreamJob:
    """One event of the type, about the contact: its payload from `fields` (keywords of `PAYLOAD_FIELDS`)."""
    ids: dict[str, FieldValue] = {"event_id": event_id, "contact_id": contact_id}
    if event_type in CONTACT_EVENTS:
        return contact_event(event_type, _payload(event_type, {**ids, "tenant_id": tenant_id, **fields}))
    if "contact_id" not in PAYLOAD_FIELDS[event_type]:
        del ids["contact_id"]
    return message_event(
        event_type, contact_id=contact_id, payload=_payload(event_type, {**ids, **fields}), tenant_id=tenant_id
    )


def contact_event(event_type: EventType | str, payload: dict[str, Any]) -> StreamJob:
    """The contact-event envelope around a payload as given (a test may send nulls, or a type that is not one)."""
    return {"name": str(event_type), "data": {"payload": payload}}


def message_event(
    event_type: EventType | str, *, contact_id: str, payload: dict[str, Any], tenant_id: str | None = None
) -> StreamJob:
    """The message-event envelope around a payload as given; a top-level `tenantId` only when given."""
    name = str(event_type)
    data: dict[str, Any] = {"type": name, "identity": {"messagingContactId": contact_id}, "payload": payload}
    if tenant_id is not None:
        data["tenantId"] = tenant_id
    return {"name": name, "data": data}
