"""Typed payloads, one per event type. Unknown extra fields are kept: the producer may add fields.

What may reject an event: what identifies it (eventId, tenantId, contactId, messageId), what decides
a consent effect (a bounce's `bounceType`, which drives the hard-bounce opt-out; a reply's `replyText`,
which may carry an opt-out keyword), and the consent statement itself (an opt-in flag that is not a
boolean). Every other field is `Droppable`: an empty or invalid value is dropped with a warning
(docs/decisions.md, "Partial acceptance").
"""

from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, StrictBool, field_validator, model_validator

from messaging_events.contract.fields import (
    WARNINGS_CONTEXT_KEY,
    Droppable,
    Email,
    FieldWarning,
    Identifier,
    LongText,
    Name,
    Phone,
    ShortText,
    Timestamp,
    Url,
)
from messaging_events.contract.routing import EventType

OPT_IN_FIELDS: dict[str, str] = {
    "emailOptIn": "email",
    "smsOptIn": "sms",
    "pushOptIn": "push",
    "whatsappOptIn": "whatsapp",
}


class Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    eventId: Identifier | None = None
    tenantId: Identifier | None = None
    contactId: Identifier | None = None

    def consent_statements(self) -> dict[str, bool]:
        """Channel → opted in, for the opt-in fields present. Absent means no statement."""
        return {
            channel: getattr(self, field)
            for field, channel in OPT_IN_FIELDS.items()
            if getattr(self, field, None) is not None
        }


class ContactEventPayload(Payload):
    """Contact and consent events name their tenant and contact themselves."""

    tenantId: Identifier
    contactId: Identifier


class ContactFields(TypedDict):
    """A contact event's person fields, named as the CRM's contact statement names them."""

    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None


class ContactFieldsPayload(ContactEventPayload):
    email: Droppable[Email] = None
    phoneNumber: Droppable[Phone] = None
    firstName: Droppable[Name] = None
    lastName: Droppable[Name] = None
    emailOptIn: StrictBool | None = None
    smsOptIn: StrictBool | None = None
    pushOptIn: StrictBool | None = None
    whatsappOptIn: StrictBool | None = None

    def contact_fields(self) -> ContactFields:
        return {
            "email": self.email,
            "phone": self.phoneNumber,
            "first_name": self.firstName,
            "last_name": self.lastName,
        }


class ContactCreated(ContactFieldsPayload):
    pass


class ContactUpdated(ContactFieldsPayload):
    pass


class ContactPreferenceUpdated(ContactEventPayload):
    emailOptIn: StrictBool | None = None
    smsOptIn: StrictBool | None = None
    pushOptIn: StrictBool | None = None
    whatsappOptIn: StrictBool | None = None

    @model_validator(mode="after")
    def _states_something(self) -> "ContactPreferenceUpdated":
        if not self.consent_statements():
            raise ValueError("names no opt-in field (emailOptIn, smsOptIn, pushOptIn or whatsappOptIn)")
        return self


class ContactDeleted(ContactEventPayload):
    pass


class MessagePayload(Payload):
    messageId: Identifier


class MessageSent(MessagePayload):
    # Optional in effect: an unknown channel leaves the interaction's channel empty, as for other types.
    channel: Droppable[Literal["EMAIL", "SMS", "PUSH", "WHATSAPP"]] = None
    templateId: Droppable[Identifier] = None
    templateName: Droppable[ShortText] = None
    campaignId: Droppable[Identifier] = None
    sentAt: Droppable[Timestamp] = None

    @field_validator("channel", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class MessageDelivered(MessagePayload):
    deliveredAt: Droppable[Timestamp] = None


class MessageFailed(MessagePayload):
    reason: Droppable[ShortText] = None
    failedAt: Droppable[Timestamp] = None


class MessageBounced(MessagePayload):
    bounceType: Literal["hard", "soft"]  # decides the hard-bounce opt-out: never guessed
    reason: Droppable[ShortText] = None
    bouncedAt: Droppable[Timestamp] = None


class EmailOpened(MessagePayload):
    campaignId: Droppable[Identifier] = None
    openedAt: Droppable[Timestamp] = None
    deviceType: Droppable[ShortText] = None
    userAgent: Droppable[LongText] = None


class EmailClicked(MessagePayload):
    campaignId: Droppable[Identifier] = None
    linkId: Droppable[Identifier] = None
    linkUrl: Droppable[Url] = None
    clickedAt: Droppable[Timestamp] = None


class SmsReplied(Payload):
    originalMessageId: Droppable[Identifier] = None
    replyText: LongText  # the reply itself, which may carry an opt-out keyword: never cut or dropped
    repliedAt: Droppable[Timestamp] = None


SCHEMAS: dict[EventType, type[Payload]] = {
    EventType.CONTACT_CREATED: ContactCreated,
    EventType.CONTACT_UPDATED: ContactUpdated,
    EventType.CONTACT_PREFERENCE_UPDATED: ContactPreferenceUpdated,
    EventType.CONTACT_DELETED: ContactDeleted,
    EventType.MESSAGE_SENT: MessageSent,
    EventType.MESSAGE_DELIVERED: MessageDelivered,
    EventType.MESSAGE_FAILED: MessageFailed,
    EventType.MESSAGE_BOUNCED: MessageBounced,
    EventType.EMAIL_OPENED: EmailOpened,
    EventType.EMAIL_CLICKED: EmailClicked,
    EventType.SMS_REPLIED: SmsReplied,
}


def payload_parse(event_type: EventType, raw: Any) -> tuple[Payload, tuple[FieldWarning, ...]]:
    """Validate a payload with partial acceptance: the typed payload without the values it dropped, and a
    warning for each dropped or reinterpreted value, in field order. Raises pydantic's ValidationError
    for what may reject the event."""
    collected: dict[str, FieldWarning] = {}
    payload = SCHEMAS[event_type].model_validate(raw, context={WARNINGS_CONTEXT_KEY: collected})
    return payload, tuple(collected.values())


# The payload field that says when a message or engagement event happened.
OCCURRED_AT_FIELD: dict[EventType, str] = {
    EventType.MESSAGE_SENT: "sentAt",
    EventType.MESSAGE_DELIVERED: "deliveredAt",
    EventType.MESSAGE_FAILED: "failedAt",
    EventType.MESSAGE_BOUNCED: "bouncedAt",
    EventType.EMAIL_OPENED: "openedAt",
    EventType.EMAIL_CLICKED: "clickedAt",
    EventType.SMS_REPLIED: "repliedAt",
}
