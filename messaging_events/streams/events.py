"""One builder per event type: the shape of each job the Messaging service publishes (the seed contract).

Each returns a `StreamJob`, `{"name", "data"}`, in one of the two shapes:

- contact and consent events: `data = {"payload": {eventId, tenantId, contactId, ...}}`; they carry no time
  of their own (the job's timestamp is when they happened);
- message and engagement events: `data = {"type", "identity": {"messagingContactId"}, "payload"}`, and a
  top-level `tenantId` only when given (the seed's producer mostly leaves it out: the contact link decides).

A field given as None is left out, so a caller states exactly what a producer sent. Times are passed as
the text the producer writes (`iso`), so a stream chooses its precision and a test may send a bad one.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from messaging_events.contract.routing import EventType

OptInChannel = Literal["email", "sms", "push", "whatsapp"]
OPT_IN_CHANNELS: tuple[OptInChannel, ...] = ("email", "sms", "push", "whatsapp")


class StreamJob(TypedDict):
    name: str
    data: dict[str, Any]


def iso(moment: datetime, timespec: str = "auto") -> str:
    """ISO-8601 in UTC with a `Z`, as the Node producer writes (`timespec="milliseconds"`: `toISOString()`)."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class OptIns:
    """The consent flags a contact event states; None: not stated."""

    email: bool | None = None
    sms: bool | None = None
    push: bool | None = None
    whatsapp: bool | None = None

    @classmethod
    def one(cls, channel: OptInChannel, value: bool) -> "OptIns":
        stated: dict[str, bool] = {channel: value}
        return cls(**stated)

    def fields(self) -> dict[str, bool | None]:
        return {
            "emailOptIn": self.email,
            "smsOptIn": self.sms,
            "pushOptIn": self.push,
            "whatsappOptIn": self.whatsapp,
        }


# -- contact and consent events --------------------------------------------------------------


def _name(event_type: EventType | str) -> str:
    return event_type.value if isinstance(event_type, EventType) else event_type


def contact_event(event_type: EventType | str, payload: dict[str, Any]) -> StreamJob:
    """The contact-event envelope around a payload as given (a test may send nulls, or a type that is not one)."""
    return {"name": _name(event_type), "data": {"payload": payload}}


def contact_details(
    event_type: Literal[EventType.CONTACT_CREATED, EventType.CONTACT_UPDATED],
    *,
    tenant_id: str,
    contact_id: str,
    event_id: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    opt_ins: OptIns = OptIns(),
) -> StreamJob:
    """`contact.created` or `contact.updated`: both state the contact's details and, optionally, consent."""
    return contact_event(
        event_type,
        _present(
            {
                "eventId": event_id,
                "tenantId": tenant_id,
                "contactId": contact_id,
                "email": email,
                "phoneNumber": phone,
                "firstName": first_name,
                "lastName": last_name,
                **opt_ins.fields(),
            }
        ),
    )


def contact_preference_updated(
    *, tenant_id: str, contact_id: str, opt_ins: OptIns, event_id: str | None = None
) -> StreamJob:
    return contact_event(
        EventType.CONTACT_PREFERENCE_UPDATED,
        _present({"eventId": event_id, "tenantId": tenant_id, "contactId": contact_id, **opt_ins.fields()}),
    )


def contact_deleted(*, tenant_id: str, contact_id: str, event_id: str | None = None) -> StreamJob:
    return contact_event(
        EventType.CONTACT_DELETED, _present({"eventId": event_id, "tenantId": tenant_id, "contactId": contact_id})
    )


# -- message and engagement events (their occurred-at is in the payload) ----------------------


def message_event(
    event_type: EventType | str, *, contact_id: str, payload: dict[str, Any], tenant_id: str | None = None
) -> StreamJob:
    """The message-event envelope around a payload as given; a top-level `tenantId` only when given."""
    name = _name(event_type)
    data: dict[str, Any] = {"type": name, "identity": {"messagingContactId": contact_id}, "payload": payload}
    if tenant_id is not None:
        data["tenantId"] = tenant_id
    return {"name": name, "data": data}


def _message(
    event_type: EventType, *, contact_id: str, payload: dict[str, Any], tenant_id: str | None, event_id: str | None
) -> StreamJob:
    payload = _present({"eventId": event_id, **payload})
    return message_event(event_type, contact_id=contact_id, payload=payload, tenant_id=tenant_id)


def message_sent(
    *,
    contact_id: str,
    message_id: str,
    channel: str,
    sent_at: str,
    template_id: str | None = None,
    template_name: str | None = None,
    campaign_id: str | None = None,
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> StreamJob:
    payload = {
        "messageId": message_id,
        "contactId": contact_id,
        "channel": channel,
        "templateId": template_id,
        "templateName": template_name,
        "campaignId": campaign_id,
        "sentAt": sent_at,
    }
    return _message(
        EventType.MESSAGE_SENT, contact_id=contact_id, payload=payload, tenant_id=tenant_id, event_id=event_id
    )


def message_delivered(
    *, contact_id: str, message_id: str, delivered_at: str, tenant_id: str | None = None, event_id: str | None = None
) -> StreamJob:
    payload = {"messageId": message_id, "deliveredAt": delivered_at}
    return _message(
        EventType.MESSAGE_DELIVERED, contact_id=contact_id, payload=payload, tenant_id=tenant_id, event_id=event_id
    )


def message_failed(
    *,
    contact_id: str,
    message_id: str,
    failed_at: str,
    reason: str | None = None,
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> StreamJob:
    payload = {"messageId": message_id, "reason": reason, "failedAt": failed_at}
    return _message(
        EventType.MESSAGE_FAILED, contact_id=contact_id, payload=payload, tenant_id=tenant_id, event_id=event_id
    )


def message_bounced(
    *,
    contact_id: str,
    message_id: str,
    bounce_type: str,
    bounced_at: str,
    reason: str | None = None,
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> StreamJob:
    payload = {"messageId": message_id, "bounceType": bounce_type, "reason": reason, "bouncedAt": bounced_at}
    return _message(
        EventType.MESSAGE_BOUNCED, contact_id=contact_id, payload=payload, tenant_id=tenant_id, event_id=event_id
    )


def email_opened(
    *,
    contact_id: str,
    message_id: str,
    opened_at: str,
    campaign_id: str | None = None,
    device_type: str | None = None,
    user_agent: str | None = None,
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> StreamJob:
    payload = {
        "messageId": message_id,
        "campaignId": campaign_id,
        "openedAt": opened_at,
        "deviceType": device_type,
        "userAgent": user_agent,
    }
    return _message(
        EventType.EMAIL_OPENED, contact_id=contact_id, payload=payload, tenant_id=tenant_id, event_id=event_id
    )


def email_clicked(
    *,
    contact_id: str,
    message_id: str,
    clicked_at: str,
    campaign_id: str | None = None,
    link_id: str | None = None,
    link_url: str | None = None,
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> StreamJob:
    payload = {
        "messageId": message_id,
        "campaignId": campaign_id,
        "linkId": link_id,
        "linkUrl": link_url,
        "clickedAt": clicked_at,
    }
    return _message(
        EventType.EMAIL_CLICKED, contact_id=contact_id, payload=payload, tenant_id=tenant_id, event_id=event_id
    )


def sms_replied(
    *,
    contact_id: str,
    reply_text: str,
    replied_at: str,
    original_message_id: str | None = None,
    tenant_id: str | None = None,
    event_id: str | None = None,
) -> StreamJob:
    payload = {"originalMessageId": original_message_id, "replyText": reply_text, "repliedAt": replied_at}
    return _message(
        EventType.SMS_REPLIED, contact_id=contact_id, payload=payload, tenant_id=tenant_id, event_id=event_id
    )
